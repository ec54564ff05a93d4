"""Retrieve-then-rerank: a cross-encoder reorders the top k′ of a first stage's ranked lists.

A run is {query id: {document id: score}} as everywhere in EmbedHub. The first stage's order is
its scores descending, ties by document id (``workers.ml.fusion.ranked``). The reranked list is
the top k′ by the reranker's score (ties keep the first stage's order), then the rest of the
first stage in its own order, scored below every reranked document: metrics deeper than k′
(recall@100 with k′ = 20) still see the first stage's documents.

sentence-transformers is imported inside :func:`load_reranker` only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from workers.ml.fusion import ranked

Run = dict[str, dict[str, float]]
# (query text, [document text, …]) → one score per document, higher is more relevant
Scorer = Callable[[str, list[str]], Sequence[float]]
Progress = Callable[[str, int, int], None]
RERANK_BATCH_SIZE = 32


def load_reranker(*, path: str, max_length: int | None = None, device: str | None = None) -> Any:
    """The sentence-transformers CrossEncoder in ``path`` (local files only)."""
    from sentence_transformers import CrossEncoder

    from workers.common.store import artifact_ensure
    from workers.ml.encode import pick_device

    artifact_ensure(path)
    return CrossEncoder(
        path, max_length=max_length, device=pick_device(device), local_files_only=True
    )


def cross_encoder_scorer(
    model: Any, *, batch_size: int = RERANK_BATCH_SIZE, precision: str = "fp32"
) -> Scorer:
    """A :data:`Scorer` over a loaded CrossEncoder: its ``predict`` on (query, document) pairs,
    with the model's own activation (a sigmoid for one label), so scores are in [0, 1].
    ``precision`` bf16 runs the forward passes under bf16 autocast (``workers.ml.precision``)."""
    from workers.ml.precision import autocast

    def score(query: str, documents: list[str]) -> list[float]:
        if not documents:
            return []
        with autocast(precision, str(model.device)):
            values = model.predict(
                [(query, doc) for doc in documents],
                batch_size=batch_size,
                show_progress_bar=False,
                convert_to_numpy=True,
            )
        return [float(v) for v in values.reshape(len(documents), -1)[:, 0]]

    return score


def rerank_list(first: dict[str, float], scores: Sequence[float], k_prime: int) -> dict[str, float]:
    """One query's reranked list from its first-stage list and the reranker's ``scores`` of
    that list's top ``k_prime`` (in first-stage order)."""
    order = ranked(first)
    head, tail = order[:k_prime], order[k_prime:]
    if len(scores) != len(head):
        raise ValueError(f"{len(scores)} scores for the {len(head)} documents to rerank")
    position = {doc: i for i, doc in enumerate(head)}
    reordered = sorted(zip(head, scores, strict=True), key=lambda ds: (-ds[1], position[ds[0]]))
    out = {doc: float(s) for doc, s in reordered}
    # The rest keeps the first stage's order, strictly below the reranked head.
    floor = min(out.values(), default=0.0)
    for i, doc in enumerate(tail, start=1):
        out[doc] = floor - i
    return out


def rerank_run(
    *,
    first_stage: Run,
    queries: dict[str, str],
    documents: dict[str, str],
    scorer: Scorer,
    k_prime: int,
    on_progress: Progress | None = None,
) -> tuple[Run, dict[str, float]]:
    """Every query of ``queries`` reranked (a query the first stage has no list for gets an
    empty one). Returns the run and timings: rerank_s, ms_per_query, pairs."""
    out: Run = {}
    pairs = 0
    started = time.perf_counter()
    total = len(queries)
    for done, (qid, text) in enumerate(queries.items(), start=1):
        first = first_stage.get(qid, {})
        head = ranked(first, k_prime)
        missing = [doc for doc in head if doc not in documents]
        if missing:
            raise ValueError(f"query {qid}: document {missing[0]!r} is not in the collection")
        scores = scorer(text, [documents[doc] for doc in head])
        out[qid] = rerank_list(first, scores, k_prime)
        pairs += len(head)
        if on_progress and (done % 10 == 0 or done == total):
            on_progress("reranking", done, total)
    seconds = time.perf_counter() - started
    return out, {
        "rerank_s": seconds,
        "ms_per_query": 1000.0 * seconds / total if total else 0.0,
        "pairs": float(pairs),
    }
