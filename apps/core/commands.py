"""Shared base for the JSON command-line interface (manage.py register_model, evaluate, …)."""

from __future__ import annotations

import json
import sys

from django.core.management.base import BaseCommand


class InputError(Exception):
    """Bad input: each line is printed to stderr (``FILE:LINE: reason``) and the exit code is 2."""

    def __init__(self, *lines: str) -> None:
        self.lines = [str(line) for line in lines]
        super().__init__("\n".join(self.lines))


class JsonCommand(BaseCommand):
    def execute(self, *args, **options):
        try:
            return super().execute(*args, **options)
        except InputError as exc:
            for line in exc.lines:
                sys.stderr.write(line + "\n")
            sys.exit(2)

    def emit(self, payload: dict) -> None:
        self.stdout.write(json.dumps(payload))

    def get_team(self, ref: str):
        from apps.accounts.models import Team

        team = Team.objects.filter(slug=ref).first() or Team.objects.filter(name=ref).first()
        if team is None:
            raise InputError(f"--team: no team {ref!r} (create one with manage.py team_create)")
        return team
