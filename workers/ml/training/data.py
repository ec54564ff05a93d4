"""Training and evaluation data for a run: rows checked, negatives evened out, prefixes applied.

Training rows are dicts ``{"anchor": str, "positive": str, "negatives": [str, ...]}`` (negatives
optional), a list of them or a JSONL file. The trainer needs the same number of negatives in every
row: ``num_negatives`` None takes the smallest count found (so no row is dropped); an explicit
``num_negatives`` keeps the first that many per row and drops rows that have fewer. GIST takes
at most one negative (the first).
``query_prefix`` is prepended to anchors (and eval queries), ``document_prefix`` to positives,
negatives (and eval documents).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from workers.common.configs.training import ConfigError, TrainConfig
from workers.common.estimate import default_negatives


class DataError(ValueError):
    """Training or evaluation data that cannot be used; the message says which row and why."""


def read_rows(rows: Iterable[dict[str, Any]] | str | Path) -> list[dict[str, Any]]:
    """Rows from a list or a JSONL file, checked: anchor and positive non-empty strings,
    negatives (or a single "negative") strings. Raises :class:`DataError` naming the row."""
    if isinstance(rows, (str, Path)):
        path = Path(rows)
        if not path.is_file():
            raise DataError(f"{path}: no such training file")
        loaded: list[dict[str, Any]] = []
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    loaded.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataError(f"line {number}: not valid JSON ({exc.msg})") from None
        rows = loaded
        where = "line"
    else:
        rows = list(rows)
        where = "row"
    out = []
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise DataError(f"{where} {number}: not an object")
        for key in ("anchor", "positive"):
            value = row.get(key)
            if not isinstance(value, str) or not value.strip():
                raise DataError(f"{where} {number}: {key!r} must be a non-empty string")
        negatives = row.get("negatives")
        if negatives is None:
            single = row.get("negative")
            negatives = [] if single is None else [single]
        if not isinstance(negatives, list) or not all(
            isinstance(n, str) and n.strip() for n in negatives
        ):
            raise DataError(f"{where} {number}: 'negatives' must be a list of non-empty strings")
        out.append({"anchor": row["anchor"], "positive": row["positive"], "negatives": negatives})
    if not out:
        raise DataError("no training rows")
    return out


def columns(
    config: TrainConfig, rows: list[dict[str, Any]]
) -> tuple[dict[str, list[str]], int, int]:
    """The trainer's columns (anchor, positive, negative_1..k) with prefixes; k; rows dropped."""
    counts = [len(r["negatives"]) for r in rows]
    k = default_negatives(counts) if config.num_negatives is None else config.num_negatives
    if config.loss == "gist":
        # GISTEmbedLoss takes (anchor, positive) or (anchor, positive, negative).
        if config.num_negatives is not None and config.num_negatives > 1:
            raise ConfigError("num_negatives", "the gist loss takes at most 1 negative per row")
        k = min(k, 1)
    if config.reranker and k == 0:
        raise DataError(
            "a reranker learns to tell positives from negatives, and most rows have none: mine "
            "hard negatives for this training set first"
        )
    kept = [r for r in rows if len(r["negatives"]) >= k]
    if not kept:
        raise DataError(f"no row has {k} negatives (num_negatives)")
    # A cross-encoder reads query and document together and is given no prefixes at rerank time.
    q, d = ("", "") if config.reranker else (config.query_prefix, config.document_prefix)
    out = {
        "anchor": [q + r["anchor"] for r in kept],
        "positive": [d + r["positive"] for r in kept],
    }
    for i in range(k):
        out[f"negative_{i + 1}"] = [d + r["negatives"][i] for r in kept]
    return out, k, len(rows) - len(kept)


def eval_sets(
    config: TrainConfig, eval_data: dict[str, Any]
) -> tuple[dict[str, str], dict[str, str], dict[str, set[str]]]:
    """(queries, corpus, relevant) for InformationRetrievalEvaluator, prefixes applied.

    ``eval_data``: {"corpus": {id: text or {"title", "text"}}, "queries": {id: text},
    "qrels": {query_id: {doc_id: relevance}}}; relevance > 0 counts as relevant.
    """
    from workers.ml.encode import document_text

    try:
        corpus_in, queries_in, qrels = eval_data["corpus"], eval_data["queries"], eval_data["qrels"]
    except (KeyError, TypeError):
        raise DataError("eval data needs 'corpus', 'queries' and 'qrels'") from None
    corpus = {}
    for doc_id, doc in corpus_in.items():
        if isinstance(doc, dict):
            doc = document_text(doc.get("title") or "", doc.get("text") or "")
        corpus[str(doc_id)] = config.document_prefix + str(doc)
    queries = {str(qid): config.query_prefix + str(text) for qid, text in queries_in.items()}
    relevant = {
        str(qid): {str(doc) for doc, rel in docs.items() if rel > 0 and str(doc) in corpus}
        for qid, docs in qrels.items()
        if str(qid) in queries
    }
    relevant = {qid: docs for qid, docs in relevant.items() if docs}
    if not relevant:
        raise DataError("eval data: no query has a relevant document in the corpus")
    return queries, corpus, relevant


def reranker_columns(loss: str, columns: dict[str, list[str]], k: int) -> dict[str, list]:
    """The cross-encoder trainer's columns from the (anchor, positive, negative_1..k) ones.

    bce: one (query, document, label) row per pair, the positive labelled 1 and each negative 0,
    a row's pairs next to each other; lambdaloss: one (query, [positive, negatives…],
    [1, 0, …]) row per training row. Prefixes are not applied: a cross-encoder reads the query
    and the document together, as it will at rerank time."""
    anchors = columns["anchor"]
    documents = [columns["positive"]] + [columns[f"negative_{i + 1}"] for i in range(k)]
    if loss == "lambdaloss":
        return {
            "query": list(anchors),
            "docs": [[side[i] for side in documents] for i in range(len(anchors))],
            "labels": [[1.0] + [0.0] * k for _ in anchors],
        }
    out: dict[str, list] = {"query": [], "document": [], "label": []}
    for i, anchor in enumerate(anchors):
        for j, side in enumerate(documents):
            out["query"].append(anchor)
            out["document"].append(side[i])
            out["label"].append(1.0 if j == 0 else 0.0)
    return out
