"""One typed config (a pydantic model) per job kind: defaults, bounds and help in one place.

The web builds its forms from these and takes them as API bodies; the commands read them; the
workers validate the job row's stored JSON with them again. pydantic only: no Django, no ML.
"""
