"""Hard-negative mining over a version: a new triplet training set, and the negatives
inspector's summary (score histograms, sampled queries with their picked and flagged
candidates)."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

from apps.datasets.curation import CurationError
from apps.datasets.models import CurationJob, DatasetVersion
from apps.datasets.services import dataset_version_derive
from workers.common.configs.curation import MiningConfig
from workers.tasks.curation import common
from workers.tasks.runtime import ProgressReporter

SAMPLE_QUERIES = 25  # queries shown in the negatives inspector


def _inputs(job: CurationJob, split: str | None):
    """(anchors, corpus, corpus labels, positives to mask, positives to score). Positives are
    corpus indices; every judged positive of an anchor (any split) is masked, so no judged
    positive can ever come back as a negative."""
    from workers.ml.encode import document_text

    source = job.source
    if source.kind == DatasetVersion.Kind.RETRIEVAL:
        docs = common.documents(source)
        index_of = {pk: i for i, (pk, *_) in enumerate(docs)}
        corpus = [document_text(title, text) for _, _, title, text in docs]
        corpus_labels = [doc_id for _, doc_id, _, _ in docs]
        masked: dict[int, set[int]] = defaultdict(set)
        for query_pk, doc_pk in source.qrels.filter(score__gt=0).values_list(
            "query_id", "document_id"
        ):
            masked[query_pk].add(index_of[doc_pk])
        split_pairs = (
            source.qrels.filter(split=split, score__gt=0)
            .order_by("query_id", "-score", "document_id")
            .values_list("query_id", "query__text", "document_id")
        )
        anchors: list[str] = []
        anchor_of: dict[int, int] = {}
        scored: list[list[int]] = []
        for query_pk, text, doc_pk in split_pairs:
            if query_pk not in anchor_of:
                anchor_of[query_pk] = len(anchors)
                anchors.append(text)
                scored.append([])
            scored[anchor_of[query_pk]].append(index_of[doc_pk])
        mask = [sorted(masked[q]) for q in anchor_of]
        return anchors, corpus, corpus_labels, mask, scored
    rows = list(source.training_rows.order_by("row").values_list("anchor", "positive"))
    corpus = list(dict.fromkeys(p for _, p in rows))
    corpus_index = {t: i for i, t in enumerate(corpus)}
    anchors = list(dict.fromkeys(a for a, _ in rows))
    anchor_index = {t: i for i, t in enumerate(anchors)}
    scored = [[] for _ in anchors]
    for a, p in rows:
        if corpus_index[p] not in scored[anchor_index[a]]:
            scored[anchor_index[a]].append(corpus_index[p])
    return anchors, corpus, [f"positive {i + 1}" for i in range(len(corpus))], scored, scored


def run(*, job: CurationJob, config: MiningConfig, report: ProgressReporter) -> dict:
    from workers.ml import mining

    options = config.options()
    report("reading rows")
    anchors, corpus, corpus_labels, mask, scored = _inputs(job, config.split)
    if not anchors:
        raise CurationError("No (query, positive) pairs to mine for.")
    width = options.range_max + max(len(m) for m in mask)
    query_vectors = corpus_vectors = None
    precision = None  # BM25 candidates encode nothing
    if options.candidates != "bm25":
        report("loading model")
        precision = common.job_precision(job, config)
        encoder = common.encoder_for(job.model)
        device = str(encoder.device)
        try:
            encode_corpus = lambda enc=encoder: common.encode(  # noqa: E731
                enc,
                corpus,
                stage="encoding documents",
                report=report,
                model=job.model,
                precision=precision,
                prefix=job.model.document_prefix,
            )
            if job.source.kind == DatasetVersion.Kind.RETRIEVAL:
                corpus_vectors = common.document_vectors(
                    job, ids=corpus_labels, precision=precision, encode=encode_corpus
                )
            else:
                corpus_vectors = encode_corpus()
            del encode_corpus  # holds the encoder: drop it before the model is freed
            query_vectors = common.encode(
                encoder,
                anchors,
                stage="encoding queries",
                report=report,
                model=job.model,
                precision=precision,
                prefix=job.model.query_prefix,
            )
        finally:
            del encoder
            common.free_encoder(device)
    report("finding candidates", 0, len(anchors))
    if options.candidates == "dense":
        indices, scores = mining.dense_candidates(
            query_vectors=query_vectors, corpus_vectors=corpus_vectors, k=width
        )
    else:
        bm25_idx, bm25_scores, retriever = mining.bm25_candidates(
            queries=anchors, corpus=corpus, k=width
        )
        if options.candidates == "hybrid":
            dense_idx, _ = mining.dense_candidates(
                query_vectors=query_vectors, corpus_vectors=corpus_vectors, k=width
            )
            indices, scores = mining.merge_candidates(
                query_vectors=query_vectors,
                corpus_vectors=corpus_vectors,
                first=dense_idx,
                second=bm25_idx,
            )
        else:
            indices, scores = bm25_idx, bm25_scores
    report.check()
    if options.candidates == "bm25":
        positive_scores = [
            mining.bm25_scores_of(retriever, query=anchors[q], documents=scored[q])
            for q in range(len(anchors))
        ]
    else:
        positive_scores = [
            (corpus_vectors[scored[q]] @ query_vectors[q]).tolist() for q in range(len(anchors))
        ]
    mined = mining.select_negatives(
        candidate_indices=indices,
        candidate_scores=scores,
        positives=mask,
        positive_scores=positive_scores,
        config=options,
    )
    report("writing the training set")
    rows = []
    for m in mined:
        if not m.negatives:
            continue
        negatives = [corpus[c.index] for c in m.negatives]
        for p in scored[m.query]:
            rows.append((len(rows) + 1, anchors[m.query], corpus[p], negatives, None))
    if not rows:
        raise CurationError("No query kept a negative: widen the rank window or loosen the margin.")
    fields = _summary(
        options=options,
        mined=mined,
        anchors=anchors,
        corpus=corpus,
        corpus_labels=corpus_labels,
        scored=scored,
        rows=len(rows),
    )
    fields["result"]["precision"] = precision
    report.check()
    version, _ = dataset_version_derive(
        job=job,
        operation="mine_negatives",
        params={
            "operation": "mine_negatives",
            "source_version": job.source.pk,
            "model": job.model.name if job.model else None,
            **job.params,
        },
        label=f"{job.source} hard negatives (job {job.pk})",
        rows=rows,
        training_roles={
            "anchor": "query",
            "positive": "judged document",
            "negative": f"{options.num_negatives} mined",
        },
    )
    return {**fields, "version": version, "stage": "done"}


def _summary(*, options, mined, anchors, corpus, corpus_labels, scored, rows) -> dict[str, Any]:
    positives = [s for m in mined for s in m.positive_scores]
    negatives = [c.score for m in mined for c in m.negatives]
    flagged = [c.score for m in mined for c in m.flagged]
    every = positives + negatives + flagged
    lo, hi = (min(every), max(every)) if every else (0.0, 1.0)
    sample = random.Random(options.seed).sample(range(len(mined)), min(SAMPLE_QUERIES, len(mined)))

    def cand(c, floor):
        return {
            "id": corpus_labels[c.index],
            "text": common.trim(corpus[c.index]),
            "score": round(c.score, 4),
            "rank": c.rank,
            "margin": round(floor - c.score, 4) if floor is not None else None,
        }

    samples = []
    for q in sorted(sample):
        m = mined[q]
        floor = min(m.positive_scores) if m.positive_scores else None
        samples.append(
            {
                "query": common.trim(anchors[q]),
                "positives": [
                    {"id": corpus_labels[p], "text": common.trim(corpus[p]), "score": round(s, 4)}
                    for p, s in zip(scored[q], m.positive_scores, strict=True)
                ],
                "negatives": [cand(c, floor) for c in m.negatives],
                "flagged": [cand(c, floor) for c in m.flagged[:10]],
            }
        )
    samples.sort(key=lambda x: not x["negatives"])  # queries that got negatives first
    want = options.num_negatives
    return {
        "result": {
            "queries": len(mined),
            "rows": rows,
            "negatives": len(negatives),
            "flagged": len(flagged),
            "queries_short": sum(1 for m in mined if len(m.negatives) < want),
            "queries_without": sum(1 for m in mined if not m.negatives),
            "positive_mean": sum(positives) / len(positives) if positives else None,
            "negative_mean": sum(negatives) / len(negatives) if negatives else None,
            "histograms": {
                "positive": common.histogram(positives, lo=lo, hi=hi),
                "negative": common.histogram(negatives, lo=lo, hi=hi),
                "flagged": common.histogram(flagged, lo=lo, hi=hi),
            },
            "samples": samples,
        }
    }
