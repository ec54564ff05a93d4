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


def delete_selected_response(
    request, *, deleted: list[int], refused: list[str], noun: str, then: str
) -> HttpResponse:
    """A list's "Delete selected": what went and why the rest stayed, as messages on the list
    (``then``); htmx asks the browser to load it again (the list's button posts with htmx)."""
    if not deleted and not refused:
        messages.error(request, f"Tick the {noun}s to delete first.")
    if deleted:
        listed = ", ".join(f"#{pk}" for pk in deleted)
        messages.success(request, f"Deleted {len(deleted)} {noun}(s): {listed}.")
    for reason in refused:
        messages.error(request, f"Not deleted: {reason}")
    if request.htmx:
        response = HttpResponse(status=204)
        response["HX-Redirect"] = then
        return response
    return redirect(then)


def job_page(request, *, template: str, target: str, context: dict) -> HttpResponse:
    """A job's page: the whole ``template``, or its ``#status`` partial to the page's own poll
    of the ``target`` element (``htmx_fragment``)."""
    partial = f"{template}#status" if htmx_fragment(request, target) else template
    return render(request, partial, context)


def job_cancel_page(request, *, job: Job, template: str, url: str, context) -> HttpResponse:
    """A job page's Cancel (its ``#status`` partial back to htmx, else a redirect to ``url``);
    ``context(job)`` as the page builds it."""
    return job_cancel_response(request, job=job, partial=f"{template}#status",
                               context=context, url=url)  # fmt: skip


def htmx_fragment(request, target: str) -> bool:
    """Whether this request is the page's own poll of its ``target`` element (answer with the
    fragment). A link elsewhere that loads the page with htmx (``hx-select="main"``), or htmx
    restoring history, must get the whole page: a fragment has no ``<main>`` to select."""
    htmx = getattr(request, "htmx", None)
    return bool(htmx) and htmx.target == target and not htmx.history_restore_request
