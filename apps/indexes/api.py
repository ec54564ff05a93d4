"""REST API of index builds, deployments and search (a django-ninja router)."""

from __future__ import annotations

from ninja import Router

router = Router(tags=["indexes"])
