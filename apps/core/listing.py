"""Lists that scale: one small helper behind every list page (models, datasets, training runs,
evaluations, index builds). It reads the page's GET parameters, applies a text search (``q``),
exact-choice filters and a whitelisted sort, pages the rows with Django's ``Paginator``, and
returns a ``Listing`` that the shared partials in ``templates/core/listing.html`` draw (the
filter form, the pager) and ``{% sort_header %}`` turns into sortable column headers.

A URL's unknown or malformed value is ignored, never an error: a filter value not among the
filter's choices, a sort key not in the whitelist, a page number past the end.

    listing = list_page(
        request=request, rows=embedding_model_list(team=request.team), name="model",
        search=("name",), sorts=MODEL_SORTS,
        filters=[Filter("kind", "kind", EmbeddingModel.Kind.choices)],
    )
    template = "registry/list.html#listing" if listing.partial else "registry/list.html"
    return render(request, template, {"listing": listing, "models": listing.page})

``rows`` must already be scoped to the request's team: the helper narrows, never widens, and
the choices a view passes for a filter (its models, its dataset versions) come from the same
team's selectors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import reduce
from operator import or_
from typing import Any
from urllib.parse import urlencode

from django.core.paginator import Page, Paginator
from django.db.models import Q, QuerySet

# Rows a page; a test may lower it (``monkeypatch.setattr(listing, "PER_PAGE", 2)``).
PER_PAGE = 50
# A search longer than this is cut: it comes from a URL.
MAX_QUERY = 200


@dataclass(frozen=True)
class Sort:
    """One entry of a list's sort whitelist: what the menu says, the ``order_by`` it runs (end
    it with a unique field so that pages do not overlap), and an arrow for the column header."""

    label: str
    order_by: tuple[Any, ...]
    arrow: str = ""


@dataclass(frozen=True)
class Filter:
    """An exact-choice filter: the GET parameter ``name``, the menu's ``label`` ("any
    {label}"), the ``choices`` as (value, label) pairs (a ``TextChoices.choices`` or a
    ``values_list("pk", "name")`` of the team's rows), and how a chosen value narrows the rows:
    ``field`` (a lookup, ``name`` when empty) or ``apply(rows, value)``."""

    name: str
    label: str
    choices: Iterable[tuple[Any, str]]
    field: str = ""
    apply: Callable[[QuerySet, str], QuerySet] | None = None


@dataclass(frozen=True)
class BoundFilter:
    """A filter as the page draws it: its choices as strings, and the value chosen."""

    name: str
    label: str
    choices: list[tuple[str, str]]
    value: str


@dataclass
class Listing:
    """One page of a list and what the page needs to draw it. ``name`` sets the ids: the
    fragment htmx swaps is ``#{name}-list``, the filter form ``#{name}-filters``."""

    name: str
    page: Page
    chosen: dict[str, str]
    filters: list[BoundFilter]
    sorts: dict[str, Sort]
    default_sort: str
    searchable: bool
    search_label: str
    partial: bool
    narrowed: bool = field(default=False)

    @property
    def target(self) -> str:
        return f"{self.name}-list"

    @property
    def form_id(self) -> str:
        return f"{self.name}-filters"

    def query_with(self, **changes: str) -> str:
        """The page's query string (without ``page``), with ``changes``; empty values and the
        default sort are left out so that URLs stay short."""
        values = {**self.chosen, **changes}
        if values.get("sort") == self.default_sort:
            values.pop("sort")
        return urlencode({k: v for k, v in values.items() if v})

    @property
    def query(self) -> str:
        return self.query_with()


def list_page(
    *,
    request,
    rows: QuerySet,
    name: str,
    sorts: dict[str, Sort],
    filters: Iterable[Filter] = (),
    search: Iterable[str] = (),
    search_label: str = "Search",
    per_page: int | None = None,
) -> Listing:
    """Narrow, sort and page ``rows`` (already scoped to the team) by the request's GET
    parameters: ``q`` (every word must match one of the ``search`` fields, case-insensitive),
    one parameter per filter, ``sort`` (a key of ``sorts``; the first is the default) and
    ``page``. ``partial`` says the request is htmx asking for just the list's fragment."""
    params = request.GET
    search = tuple(search)
    chosen: dict[str, str] = {}

    q = " ".join(params.get("q", "")[:MAX_QUERY].split()) if search else ""
    chosen["q"] = q
    for word in q.split():
        rows = rows.filter(reduce(or_, (Q(**{f"{f}__icontains": word}) for f in search)))

    bound: list[BoundFilter] = []
    for f in filters:
        choices = [(str(value), str(label)) for value, label in f.choices]
        value = params.get(f.name, "")
        if value not in {v for v, _ in choices}:
            value = ""  # unknown (or another team's) value: ignored
        if value:
            rows = f.apply(rows, value) if f.apply else rows.filter(**{f.field or f.name: value})
        chosen[f.name] = value
        bound.append(BoundFilter(name=f.name, label=f.label, choices=choices, value=value))

    default_sort = next(iter(sorts))
    sort = params.get("sort", "")
    sort = sort if sort in sorts else default_sort
    chosen["sort"] = sort
    rows = rows.order_by(*sorts[sort].order_by)

    from apps.core.responses import htmx_fragment

    page = Paginator(rows, per_page or PER_PAGE).get_page(params.get("page"))
    return Listing(
        name=name,
        page=page,
        chosen=chosen,
        filters=bound,
        sorts=sorts,
        default_sort=default_sort,
        searchable=bool(search),
        search_label=search_label,
        partial=htmx_fragment(request, f"{name}-list"),
        narrowed=bool(q) or any(b.value for b in bound),
    )
