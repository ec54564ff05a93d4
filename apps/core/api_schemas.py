"""The base of every API request body: a field the schema does not name is a 422 naming it,
so a typo (or a field that would name a server path) is never silently ignored."""

from __future__ import annotations

from ninja import Schema
from pydantic import ConfigDict


def idempotency_key(request) -> str:
    """The ``Idempotency-Key`` header: a client that retries a start with the same key gets
    the job made the first time (for 24 hours), never a second one."""
    return request.headers.get("Idempotency-Key", "").strip()[:200]


class InputSchema(Schema):
    model_config = ConfigDict(extra="forbid")
