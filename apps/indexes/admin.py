# No index models yet; see apps/indexes/models.py.
