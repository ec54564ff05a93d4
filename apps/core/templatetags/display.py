"""How numbers read on every page: metric names in the field's usual spelling, durations in
minutes and hours rather than raw seconds. Loaded for every template (settings' builtins)."""

from __future__ import annotations

import re

from django import template

register = template.Library()

# The spelling the IR literature (and the compare page's prose) uses for ir-measures' names.
_METRIC_NAMES = {"ndcg": "nDCG", "mrr": "MRR", "recall": "Recall", "map": "MAP", "p": "P",
                 "precision": "P", "rr": "RR", "r": "R"}  # fmt: skip
_METRIC = re.compile(r"^(?P<base>[a-z_]+)(?P<rest>@\d+)?$")


@register.filter
def metric_label(name) -> str:
    """``ndcg@10`` → ``nDCG@10``, ``mrr@10`` → ``MRR@10``; other names as they are."""
    text = str(name)
    match = _METRIC.match(text)
    if not match or match["base"] not in _METRIC_NAMES:
        return text
    return _METRIC_NAMES[match["base"]] + (match["rest"] or "")


@register.filter
def duration(seconds) -> str:
    """``42`` → ``42 s``, ``584`` → ``9 min 44 s``, ``4000`` → ``1 h 06 min``; ``0.04`` →
    ``40 ms``; empty for None."""
    if seconds in (None, ""):
        return ""
    value = float(seconds)
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 10:
        return f"{value:.1f} s"
    total = round(value)
    if total < 60:
        return f"{total} s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s" if minutes < 10 else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@register.filter
def queue_place(job) -> dict | None:
    """A pending job's place in its queue (``apps.core.selectors.job_queue_place``)."""
    from apps.core.selectors import job_queue_place

    return job_queue_place(job)


@register.filter
def percent_of(part, whole) -> str:
    """``part`` as a share of ``whole``: ``0.49 %`` rather than a rounded ``0 %``; ``100 %``
    when equal."""
    try:
        share = 100 * float(part) / float(whole)
    except (TypeError, ValueError, ZeroDivisionError):
        return "—"
    if share >= 99.995:
        return "100 %"
    return f"{share:.2g} %" if share < 1 else f"{share:.1f} %"


@register.filter
def when(value) -> str:
    """One way to show a moment on every page: relative ("3 minutes ago") with the absolute
    local time on hover and in ``datetime`` for machines. Empty for None."""
    from django.contrib.humanize.templatetags.humanize import naturaltime
    from django.utils import timezone
    from django.utils.html import format_html

    if not value:
        return ""
    local = timezone.localtime(value)
    return format_html(
        '<time datetime="{}" title="{}">{}</time>',
        local.isoformat(timespec="seconds"),
        local.strftime("%Y-%m-%d %H:%M:%S %Z").strip(),
        naturaltime(value),
    )
