"""``{% sort_header "Name" "name" %}``: a list's column header that sorts the list by one of
its whitelisted keys (``apps.core.listing``), with ``href`` and ``hx-get`` both. A second key
(``alt``) makes the header flip between two orders (newest / oldest). Where the table is drawn
without a ``listing`` in the context (the same table included on another page), the header is
plain text."""

from __future__ import annotations

from django import template
from django.utils.html import format_html

register = template.Library()


@register.simple_tag(takes_context=True)
def sort_header(context, label: str, key: str, alt: str = "", css: str = "") -> str:
    listing = context.get("listing")
    if listing is None or key not in getattr(listing, "sorts", {}):
        return (
            format_html('<th class="{}">{}</th>', css, label)
            if css
            else format_html("<th>{}</th>", label)
        )
    current = listing.chosen["sort"]
    on = current == key or (alt and current == alt)
    goto = alt if (current == key and alt in listing.sorts) else key
    url = f"?{listing.query_with(sort=goto)}"
    classes = " ".join(c for c in (css, "sorted" if on else "") if c)
    arrow = f" {listing.sorts[current].arrow}" if on and listing.sorts[current].arrow else ""
    return format_html(
        '<th{}{}><a href="{}" hx-get="{}" hx-target="#{}" hx-swap="outerHTML" '
        'hx-push-url="true" data-sort="{}" title="sort: {}">{}{}</a></th>',
        format_html(' class="{}"', classes) if classes else "",
        format_html(' aria-sort="{}"', "descending" if "▼" in arrow else "ascending")
        if arrow
        else "",
        url,
        url,
        listing.target,
        goto,
        listing.sorts[goto].label,
        label,
        arrow,
    )
