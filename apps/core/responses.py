"""Responses shared by every job page (evaluations, curation jobs, training runs)."""

from __future__ import annotations

from collections.abc import Callable

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render

from apps.core.models import Job
from apps.core.services import InvalidTransition, job_cancel


def job_cancel_response(
    request, *, job: Job, partial: str, context: Callable[[Job], dict], url: str
) -> HttpResponse:
    """Ask ``job`` to stop; htmx gets the page's status ``partial`` back, a form post a redirect
    to ``url``. A job that already ended is not an error page, only a message."""
    try:
        job = job_cancel(job=job)
    except InvalidTransition as exc:
        messages.error(request, str(exc))
    if request.htmx:
        return render(request, partial, context(job))
    return redirect(url)


def delete_response(
    request, *, delete: Callable[[], None], refused: type[Exception], done: str, back: str,
    then: str,
) -> HttpResponse:  # fmt: skip
    """A page's Delete button: run ``delete``; a refusal (``refused``, whose message says why)
    goes back to the object's page (``back``) with the message, a success to ``then`` with
    ``done``."""
    try:
        delete()
    except refused as exc:
        messages.error(request, str(exc))
        return redirect(back)
    messages.success(request, done)
    return redirect(then)
