"""Shared base for the JSON command-line interface (manage.py register_model, evaluate, …)."""

from __future__ import annotations

import json
import sys
import time

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

    def wait_for_job(self, *, job, key: str, timeout: float, extra: dict | None = None) -> None:
        """Wait until the worker has ended ``job`` (a Job row). Past ``timeout`` print
        ``{key: id, "status": …}`` and exit 1: not bad input, the job exists and still waits."""
        model = type(job)
        self.stderr.write(f"{key} {job.pk} queued; waiting for a worker…")
        deadline = time.monotonic() + timeout
        while True:
            status = model.objects.values_list("status", flat=True).get(pk=job.pk)
            if status in model.TERMINAL:
                return
            if time.monotonic() > deadline:
                self.emit({key: job.pk, "status": status, **(extra or {})})
                raise SystemExit(1)
            time.sleep(1)

    def run_job(self, *, job, task, sync: bool, timeout: float, key: str, payload) -> None:
        """Run ``job`` here (``sync``: the task's own code, in this process) or wait for the
        worker, then print ``payload(job)`` with the error of a job that did not succeed
        (and exit 1 then)."""
        if sync:
            task.run(job.pk)
        else:
            self.wait_for_job(job=job, key=key, timeout=timeout)
        job.refresh_from_db()
        out = payload(job)
        if job.status != "succeeded":
            self.emit({**out, "error": job.human_error})
            raise SystemExit(1)
        self.emit(out)
