"""The base of every API request body: a field the schema does not name is a 422 naming it,
so a typo (or a field that would name a server path) is never silently ignored."""

from __future__ import annotations

from ninja import Schema
from pydantic import ConfigDict


class InputSchema(Schema):
    model_config = ConfigDict(extra="forbid")
