"""Filters that shape an evaluation's stored sweep and diagnostics for its page."""

from django import template

from apps.runs import analysis

register = template.Library()


@register.filter
def sweep_table(rows):
    return analysis.sweep_table(rows or [])


@register.filter
def sweep_chart(rows):
    return analysis.sweep_chart(rows or [])


@register.filter
def score_chart(diagnostics):
    return analysis.score_distribution_chart(diagnostics or {})


@register.filter
def get_item(mapping, key):
    """``{{ row|get_item:"ndcg@10" }}``: metric names are not valid template attribute names."""
    return (mapping or {}).get(key)
