"""A config's validation errors as the lines users read: ``FIELD: reason``, one per problem."""

from __future__ import annotations

from pydantic import ValidationError


def config_problems(exc: ValidationError) -> list[tuple[str, str]]:
    """(field, reason) of each problem of a failed validation; an unknown field is named as
    such. Callers print them as ``FIELD: reason`` in their own spelling of the field (a
    command's ``--option``, an API body's key)."""
    out = []
    for item in exc.errors():
        where = ".".join(str(p) for p in item.get("loc", ())) or "config"
        if item.get("type") == "extra_forbidden":
            out.append((where, "unknown field"))
        else:
            reason = str(item.get("msg", "invalid")).removeprefix("Value error, ")
            field, sep, rest = reason.partition(": ")
            if not item.get("loc") and sep and field.isidentifier():
                # A check across fields names the one it is about: "tune_split: …".
                where, reason = field, rest
            out.append((where, reason))
    return out
