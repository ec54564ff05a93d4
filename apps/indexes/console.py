"""The query console's work: parse filters, run a query on a deployment, and dress the hits
with their documents (title, a snippet around the matched words)."""

from __future__ import annotations

import re
import time

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from apps.indexes.calibrations import calibration_manifest_entry
from apps.indexes.models import Deployment
from apps.indexes.selectors import SearchFailed, deployment_query

SNIPPET_CHARS = 240
STOPWORDS = frozenset(
    "a an and are as at be by for from in is it of on or that the to with".split()
)


class ConsoleError(ValueError):
    pass


def filters_parse(text: str) -> dict[str, str]:
    """``field=value`` pairs, one per line or comma-separated; every pair must match (AND)."""
    filters: dict[str, str] = {}
    for number, line in enumerate(re.split(r"[\n,]", text or ""), start=1):
        line = line.strip()
        if not line:
            continue
        field, sep, value = line.partition("=")
        if not sep or not field.strip() or not value.strip():
            raise ConsoleError(f"filters: item {number} ({line!r}): write field=value")
        filters[field.strip()] = value.strip()
    return filters


def query_terms(query: str) -> list[str]:
    words = {w.lower() for w in re.findall(r"\w+", query)}
    return sorted((w for w in words if len(w) > 1 and w not in STOPWORDS), key=len, reverse=True)


def snippet(text: str, terms: list[str]) -> SafeString:
    """About SNIPPET_CHARS of ``text`` around the first matched term, matches in <mark>."""
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, terms)) + r")", re.I) if terms else None
    match = pattern.search(text) if pattern else None
    start = max(0, match.start() - SNIPPET_CHARS // 3) if match else 0
    if start:
        space = text.find(" ", start)
        start = space + 1 if 0 <= space < start + 20 else start
    end = min(len(text), start + SNIPPET_CHARS)
    piece = text[start:end]
    out, last = [], 0
    for m in pattern.finditer(piece) if pattern else ():
        out.append(escape(piece[last : m.start()]))
        out.append(f"<mark>{escape(m.group(0))}</mark>")
        last = m.end()
    out.append(escape(piece[last:]))
    return mark_safe(("… " if start else "") + "".join(out) + (" …" if end < len(text) else ""))


def console_search(
    *, deployment: Deployment, query: str, k: int = 10, filters: dict | None = None,
    mode: str = "dense", rerank: bool = True,
) -> dict:  # fmt: skip
    """One query through the search process, each hit with its title and a marked snippet."""
    t0 = time.perf_counter()
    try:
        found = deployment_query(
            team=deployment.team,
            name=deployment.name,
            queries=[query],
            k=k,
            filters=filters,
            documents=True,
            mode=mode,
            rerank=rerank,
        )
    except SearchFailed as exc:
        return {"error": str(exc)}
    total_ms = (time.perf_counter() - t0) * 1000
    terms = query_terms(query)
    # The hits the deployment's calibration would cut at its chosen threshold (a current one,
    # fitted on the index served; a stale one gives no relevance).
    calibration = calibration_manifest_entry(deployment=deployment)
    threshold = calibration.get("threshold")
    rows = []
    for rank, hit in enumerate(found["results"][0]["hits"], start=1):
        doc = hit["document"]
        rows.append(
            {
                "rank": rank,
                "id": hit["id"],
                "score": hit["score"],
                "title": doc.title if doc else "",
                "snippet": snippet(doc.text, terms) if doc else "",
                "metadata": doc.metadata if doc else {},
                "relevance": hit.get("relevance"),
                "cut": hit.get("relevance") is not None
                and (threshold is None or hit["relevance"] < threshold),
            }
        )
    return {
        "rows": rows,
        "index_id": found["index"],
        "encode_ms": found["timings"]["encode_ms"],
        "search_ms": found["timings"]["search_ms"],
        "bm25_ms": found["timings"].get("bm25_ms"),
        "sparse_ms": found["timings"].get("sparse_ms"),
        "rerank_ms": found["timings"].get("rerank_ms"),
        "mode": mode,
        "total_ms": round(total_ms, 1),
        "calibration": calibration.get("id"),
        "threshold": threshold,
        "cut": sum(r["cut"] for r in rows),
    }
