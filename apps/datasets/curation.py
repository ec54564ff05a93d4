"""Curation jobs over a dataset version: semantic dedup, hard-negative mining, DSIR selection,
token lengths. Each is a CurationJob row run on a worker; each result that is data becomes a
new immutable version with the source as parent and the parameters recorded.

The ML steps are plain functions in ``workers.ml``; this module reads the rows they need,
calls them, and writes versions. It imports no ML library at module level.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter, defaultdict
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count

from apps.accounts.models import Team
from apps.core.services import job_create_once, job_enqueue, job_fingerprint
from apps.datasets import loader
from apps.datasets.models import CurationJob, DatasetVersion, Document, Qrel, Query, TrainingRow
from apps.datasets.services import _new_version, _record_health
from apps.registry.models import EmbeddingModel
from workers.tasks.runtime import ProgressReporter

Kind = CurationJob.Kind
SAMPLE_QUERIES = 25  # queries shown in the negatives inspector
EXAMPLE_PAIRS = 20  # near-duplicate pairs shown before accepting a dedup
TEXT_CHARS = 400


class CurationError(ValueError):
    pass


# --- creating jobs ------------------------------------------------------------------------


def _int(params: dict, key: str, default: int, lo: int, hi: int) -> int:
    try:
        value = int(params.get(key, default))
    except (TypeError, ValueError):
        raise CurationError(f"{key} must be a whole number.") from None
    if not lo <= value <= hi:
        raise CurationError(f"{key} must be between {lo} and {hi}.")
    return value


def _float(params: dict, key: str, default: float | None, lo: float, hi: float) -> float | None:
    raw = params.get(key, default)
    if raw in (None, ""):
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise CurationError(f"{key} must be a number.") from None
    if not lo <= value <= hi:
        raise CurationError(f"{key} must be between {lo} and {hi}.")
    return value


# What a user may set per kind; anything else (a path, a typo) is refused by name.
PARAMS = {
    Kind.SEMDEDUP: ("threshold", "clusters", "seed"),
    Kind.MINE: (
        "split",
        "candidates",
        "range_min",
        "range_max",
        "num_negatives",
        "relative_margin",
        "max_score",
        "sampling",
        "seed",
    ),
    Kind.DSIR: ("target", "target_texts", "target_split", "field", "k", "seed"),
    Kind.TOKENS: (),
}


def _clean_params(*, kind: str, source: DatasetVersion, model, raw: dict, team: Team) -> dict:
    """Validate and normalise what the user asked for; the result is what gets recorded."""
    unknown = sorted(str(key) for key in raw if key not in PARAMS.get(kind, ()))
    if unknown:
        allowed = ", ".join(PARAMS.get(kind, ())) or "none"
        raise CurationError(
            f"{', '.join(unknown)}: unknown parameter{'s' if len(unknown) > 1 else ''} "
            f"for {kind} (allowed: {allowed})."
        )
    retrieval = source.kind == DatasetVersion.Kind.RETRIEVAL
    if kind in (Kind.SEMDEDUP, Kind.TOKENS) or (
        kind == Kind.MINE and raw.get("candidates", "dense") != "bm25"
    ):
        if model is None:
            raise CurationError("Choose a model.")
    if kind == Kind.SEMDEDUP:
        if retrieval and source.document_count < 2 or not retrieval and source.training_count < 2:
            raise CurationError(f"{source} has too few rows to deduplicate.")
        return {
            "threshold": _float(raw, "threshold", 0.95, 0.5, 1.0),
            "clusters": _int(raw, "clusters", 0, 0, 100_000),  # 0: about sqrt(n)
            "seed": _int(raw, "seed", 0, 0, 2**31 - 1),
        }
    if kind == Kind.MINE:
        from workers.ml.mining import MiningConfig

        params: dict = {}
        if retrieval:
            split = raw.get("split") or ("train" if "train" in source.qrels_counts else "")
            if split not in source.qrels_counts:
                known = ", ".join(source.splits) or "none"
                raise CurationError(f"{source} has no split {split!r} (splits: {known}).")
            params["split"] = split
        elif source.training_count == 0:
            raise CurationError(f"{source} has no training rows.")
        relative_margin = _float(raw, "relative_margin", 0.05, 0.0, 0.99)
        config = MiningConfig(
            candidates=raw.get("candidates", "dense"),
            range_min=_int(raw, "range_min", 0, 0, 10_000),
            range_max=_int(raw, "range_max", 50, 1, 10_000),
            num_negatives=_int(raw, "num_negatives", 5, 1, 100),
            relative_margin=relative_margin,
            max_score=_float(raw, "max_score", None, -1e9, 1e9),
            sampling=raw.get("sampling", "top"),
            seed=_int(raw, "seed", 0, 0, 2**31 - 1),
        )
        try:
            config.validate()
        except ValueError as exc:
            raise CurationError(str(exc)) from None
        params["config"] = config.__dict__.copy()
        return params
    if kind == Kind.DSIR:
        if source.kind != DatasetVersion.Kind.TRAINING:
            raise CurationError("DSIR selects rows of a training set; choose a training version.")
        target_pk = raw.get("target")
        target = (
            DatasetVersion.objects.filter(pk=target_pk, dataset__team=team).first()
            if str(target_pk or "").isdigit()
            else None
        )
        if target is None:
            raise CurationError("Choose a target version of this team.")
        target_texts = raw.get("target_texts", "queries")
        if target_texts not in ("queries", "documents", "anchors"):
            raise CurationError("target_texts must be queries, documents or anchors.")
        field = raw.get("field", "anchor")
        if field not in ("anchor", "anchor_positive"):
            raise CurationError("field must be anchor or anchor_positive.")
        return {
            "target": target.pk,
            "target_texts": target_texts,
            "target_split": raw.get("target_split", "") if target_texts == "queries" else "",
            "field": field,
            "k": _int(raw, "k", max(1, source.training_count // 2), 1, source.training_count - 1),
            "seed": _int(raw, "seed", 0, 0, 2**31 - 1),
        }
    if kind == Kind.TOKENS:
        return {}
    raise CurationError(f"Unknown curation kind {kind!r}.")


def curation_create(
    *,
    team: Team,
    source: DatasetVersion,
    kind: str,
    params: dict | None = None,
    model: EmbeddingModel | None = None,
    created_by=None,
    enqueue: bool = True,
) -> CurationJob:
    """Validate the request and queue the job once the transaction commits."""
    from workers.tasks.curation import curate

    if source.dataset.team_id != team.pk or (model is not None and model.team_id != team.pk):
        raise CurationError("The version and the model must belong to your team.")
    if kind not in Kind.values:
        raise CurationError(f"Unknown curation kind {kind!r}.")
    cleaned = _clean_params(kind=kind, source=source, model=model, raw=params or {}, team=team)
    if kind == Kind.MINE and cleaned["config"]["candidates"] == "bm25":
        model = None  # BM25 alone scores by itself; a chosen model would be misleading

    def create() -> CurationJob:
        job = CurationJob.objects.create(
            team=team, kind=kind, source=source, model=model, params=cleaned, created_by=created_by
        )
        if enqueue:
            job_enqueue(job=job, task=curate)
        return job

    return job_create_once(
        model=CurationJob,
        team=team,
        created_by=created_by,
        fingerprint=job_fingerprint(
            kind=kind, source=source.pk, model=model.pk if model else None, params=cleaned
        ),
        create=create,
    )


# --- reading rows ---------------------------------------------------------------------------


def _documents(version: DatasetVersion) -> list[tuple[int, str, str, str]]:
    return list(version.documents.order_by("pk").values_list("pk", "doc_id", "title", "text"))


def _encoder(model: EmbeddingModel, device: str | None = None):
    from workers.ml.encode import load_encoder

    return load_encoder(
        path=model.path,
        layout=model.layout,
        pooling=model.pooling,
        normalize=True,  # cosine everywhere in curation
        max_seq_length=model.max_seq_length,
        device=device,
    )


def _encode(encoder, texts: list[str], *, stage: str, report: ProgressReporter, prefix: str = ""):
    from workers.ml.encode import encode_texts

    return encode_texts(
        encoder=encoder,
        texts=[prefix + t for t in texts],
        normalize=True,
        on_progress=lambda done, total: report(stage, done, total),
    )


def _document_cache_key(job: CurationJob) -> str:
    """The evaluations' embedding-cache key for the source's documents, when this job encodes
    them exactly as an evaluation does (same model, max length, prefix, normalised vectors), so
    neither re-encodes a corpus the other already did. Empty when they would differ."""
    model, source = job.model, job.source
    if model is None or not model.normalize or source.kind != DatasetVersion.Kind.RETRIEVAL:
        return ""
    from apps.runs.services import embedding_keys

    key, _ = embedding_keys(
        model=model,
        version=source,
        split="",
        max_seq_length=model.max_seq_length,
        query_prefix=model.query_prefix,
        document_prefix=model.document_prefix,
    )
    return key


def _document_vectors(job: CurationJob, *, ids: list[str], encode):
    """The source's document vectors from the embedding cache, else ``encode()`` them and
    cache them for the evaluations and index builds that follow."""
    import numpy as np

    from apps.runs.services import embedding_cache

    key = _document_cache_key(job)
    hit = embedding_cache().get(key) if key else None
    if hit is not None and hit[1] == ids:
        return np.asarray(hit[0])
    vectors = encode()
    if key:
        embedding_cache().put(key, vectors, ids, {"kind": "documents"})
    return vectors


def _trim(text: str) -> str:
    return text if len(text) <= TEXT_CHARS else text[: TEXT_CHARS - 1] + "…"


def _artifact_dir(job: CurationJob) -> Path:
    folder = Path(settings.ARTIFACTS_ROOT) / "curation" / str(job.pk)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _histogram(values, *, bins: int = 30, lo: float | None = None, hi: float | None = None):
    import numpy as np

    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return {"edges": [], "counts": []}
    lo = float(values.min()) if lo is None else lo
    hi = float(values.max()) if hi is None else hi
    if hi <= lo:
        hi = lo + 1e-6
    values = np.clip(values, lo, hi)  # float noise (a cosine of 1.0000001) stays in the chart
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    return {"edges": [round(float(e), 4) for e in edges], "counts": counts.tolist()}


def _derived_hash(job: CurationJob, operation: str) -> str:
    identity = {
        "operation": operation,
        "params": job.params,
        "model": job.model.path if job.model else None,
    }
    return hashlib.sha256(
        (job.source.content_hash + json.dumps(identity, sort_keys=True)).encode()
    ).hexdigest()


# --- execution --------------------------------------------------------------------------------


def curation_execute(*, job: CurationJob, report: ProgressReporter) -> dict:
    """The work of one curation job; returns the fields the success transition writes."""
    runner = {
        Kind.SEMDEDUP: _run_semdedup,
        Kind.MINE: _run_mining,
        Kind.DSIR: _run_dsir,
        Kind.TOKENS: _run_tokens,
    }[job.kind]
    return runner(job, report)


def _run_semdedup(job: CurationJob, report: ProgressReporter) -> dict:
    import numpy as np

    from workers.ml.encode import document_text, free_memory
    from workers.ml.semdedup import semdedup

    source = job.source
    report("reading rows")
    if source.kind == DatasetVersion.Kind.RETRIEVAL:
        docs = _documents(source)
        keys = [pk for pk, *_ in docs]
        labels = [doc_id for _, doc_id, _, _ in docs]
        texts = [document_text(title, text) for _, _, title, text in docs]
        judged = set(source.qrels.values_list("document_id", flat=True))
        protected = np.array([pk in judged for pk in keys], dtype=bool)
        word_counts = [len(t.split()) + len(x.split()) for _, _, t, x in docs]
    else:
        rows = list(source.training_rows.order_by("row").values_list("row", "anchor", "positive"))
        keys = [r for r, _, _ in rows]
        labels = [f"row {r}" for r in keys]
        texts = [f"{a}\n{p}" for _, a, p in rows]
        protected = None
        word_counts = None
    report("loading model")
    encoder = _encoder(job.model)
    device = str(encoder.device)
    try:
        if source.kind == DatasetVersion.Kind.TRAINING:
            vectors = _encode(encoder, texts, stage="encoding", report=report)
        else:
            vectors = _document_vectors(
                job,
                ids=labels,
                encode=lambda enc=encoder: _encode(
                    enc,
                    texts,
                    stage="encoding",
                    report=report,
                    prefix=job.model.document_prefix,
                ),
            )
    finally:
        del encoder
        free_memory(device)
    report("clustering", 0, len(texts))
    out = semdedup(
        vectors,
        threshold=job.params["threshold"],
        n_clusters=job.params.get("clusters") or None,
        protected=protected,
        seed=job.params.get("seed", 0),
        on_progress=lambda done, total: report("clustering", done, total),
    )
    removed = [keys[i] for i in np.flatnonzero(~out.keep)]
    # Borderline pairs (just over the threshold) are where a threshold is judged; show those.
    shown = sorted(out.pairs, key=lambda p: p[2])[:EXAMPLE_PAIRS]
    histogram = None
    if word_counts is not None:
        kept_words = Counter(w for w, k in zip(word_counts, out.keep, strict=True) if k)
        histogram = {str(k): v for k, v in sorted(kept_words.items())}
    folder = _artifact_dir(job)
    from workers.common.atomic import atomic_write

    with atomic_write(folder / "removed.json", "w") as fh:
        fh.write(json.dumps({"keys": removed, "document_words": histogram}))
    report.check()
    return {
        "stage": "done",
        "review": CurationJob.Review.PENDING,
        "result": {
            "items": len(texts),
            "removed": out.removed,
            "kept": len(texts) - out.removed,
            "clusters": out.n_clusters,
            "largest_cluster": out.largest_cluster,
            "protected": int(protected.sum()) if protected is not None else 0,
            "similarity": _histogram(
                [p[2] for p in out.pairs], bins=20, lo=job.params["threshold"], hi=1.0
            ),
            "examples": [
                {
                    "removed": labels[a],
                    "removed_text": _trim(texts[a]),
                    "kept": labels[b],
                    "kept_text": _trim(texts[b]),
                    "cosine": round(cos, 4),
                }
                for a, b, cos in shown
            ],
        },
    }


def _mining_inputs(job: CurationJob):
    """(anchors, corpus, positives for masking, (anchor, positive) pairs, labels, positives by
    anchor for scoring). Positives are corpus indices; every judged positive of an anchor (any
    split) is masked, so no judged positive can ever come back as a negative."""
    from workers.ml.encode import document_text

    source = job.source
    if source.kind == DatasetVersion.Kind.RETRIEVAL:
        docs = _documents(source)
        index_of = {pk: i for i, (pk, *_) in enumerate(docs)}
        corpus = [document_text(title, text) for _, _, title, text in docs]
        corpus_labels = [doc_id for _, doc_id, _, _ in docs]
        masked: dict[int, set[int]] = defaultdict(set)
        for query_pk, doc_pk in source.qrels.filter(score__gt=0).values_list(
            "query_id", "document_id"
        ):
            masked[query_pk].add(index_of[doc_pk])
        split_pairs = (
            source.qrels.filter(split=job.params["split"], score__gt=0)
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


def _run_mining(job: CurationJob, report: ProgressReporter) -> dict:
    from workers.ml import mining
    from workers.ml.encode import free_memory

    config = mining.MiningConfig(**job.params["config"])
    report("reading rows")
    anchors, corpus, corpus_labels, mask, scored = _mining_inputs(job)
    if not anchors:
        raise CurationError("No (query, positive) pairs to mine for.")
    width = config.range_max + max(len(m) for m in mask)
    query_vectors = corpus_vectors = None
    if config.candidates != "bm25":
        report("loading model")
        encoder = _encoder(job.model)
        device = str(encoder.device)
        try:
            encode_corpus = lambda enc=encoder: _encode(  # noqa: E731
                enc,
                corpus,
                stage="encoding documents",
                report=report,
                prefix=job.model.document_prefix,
            )
            if job.source.kind == DatasetVersion.Kind.RETRIEVAL:
                corpus_vectors = _document_vectors(job, ids=corpus_labels, encode=encode_corpus)
            else:
                corpus_vectors = encode_corpus()
            del encode_corpus  # holds the encoder: drop it before the model is freed
            query_vectors = _encode(
                encoder,
                anchors,
                stage="encoding queries",
                report=report,
                prefix=job.model.query_prefix,
            )
        finally:
            del encoder
            free_memory(device)
    report("finding candidates", 0, len(anchors))
    if config.candidates == "dense":
        indices, scores = mining.dense_candidates(
            query_vectors=query_vectors, corpus_vectors=corpus_vectors, k=width
        )
    else:
        bm25_idx, bm25_scores, retriever = mining.bm25_candidates(
            queries=anchors, corpus=corpus, k=width
        )
        if config.candidates == "hybrid":
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
    if config.candidates == "bm25":
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
        config=config,
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
    fields = _mining_summary(
        job=job,
        mined=mined,
        anchors=anchors,
        corpus=corpus,
        corpus_labels=corpus_labels,
        scored=scored,
        rows=len(rows),
    )
    report.check()
    with transaction.atomic():
        version, _ = _new_version(
            dataset=job.source.dataset,
            content_hash=_derived_hash(job, "mine_negatives"),
            kind=DatasetVersion.Kind.TRAINING,
            parent=job.source,
            params={
                "operation": "mine_negatives",
                "source_version": job.source.pk,
                "model": job.model.name if job.model else None,
                **job.params,
            },
            source=f"{job.source} hard negatives (job {job.pk})",
            training_count=len(rows),
            training_roles={
                "anchor": "query",
                "positive": "judged document",
                "negative": f"{config.num_negatives} mined",
            },
        )
        if not version.training_rows.exists():
            loader.load_training_rows(version, rows)
            _record_health(version)
    return {**fields, "version": version, "stage": "done"}


def _mining_summary(*, job, mined, anchors, corpus, corpus_labels, scored, rows) -> dict:
    positives = [s for m in mined for s in m.positive_scores]
    negatives = [c.score for m in mined for c in m.negatives]
    flagged = [c.score for m in mined for c in m.flagged]
    every = positives + negatives + flagged
    lo, hi = (min(every), max(every)) if every else (0.0, 1.0)
    sample = random.Random(job.params["config"].get("seed", 0)).sample(
        range(len(mined)), min(SAMPLE_QUERIES, len(mined))
    )

    def cand(c, floor):
        return {
            "id": corpus_labels[c.index],
            "text": _trim(corpus[c.index]),
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
                "query": _trim(anchors[q]),
                "positives": [
                    {"id": corpus_labels[p], "text": _trim(corpus[p]), "score": round(s, 4)}
                    for p, s in zip(scored[q], m.positive_scores, strict=True)
                ],
                "negatives": [cand(c, floor) for c in m.negatives],
                "flagged": [cand(c, floor) for c in m.flagged[:10]],
            }
        )
    samples.sort(key=lambda x: not x["negatives"])  # queries that got negatives first
    want = job.params["config"]["num_negatives"]
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
                "positive": _histogram(positives, lo=lo, hi=hi),
                "negative": _histogram(negatives, lo=lo, hi=hi),
                "flagged": _histogram(flagged, lo=lo, hi=hi),
            },
            "samples": samples,
        }
    }


def _target_texts(job: CurationJob) -> list[str]:
    target = DatasetVersion.objects.get(pk=job.params["target"])
    what = job.params["target_texts"]
    if what == "documents":
        return [(t + " " + x).strip() for t, x in target.documents.values_list("title", "text")]
    if what == "anchors":
        return list(target.training_rows.values_list("anchor", flat=True))
    queries = target.queries.all()
    if job.params.get("target_split"):
        queries = queries.filter(qrels__split=job.params["target_split"]).distinct()
    return list(queries.values_list("text", flat=True))


def _run_dsir(job: CurationJob, report: ProgressReporter) -> dict:
    from workers.ml.dsir import dsir_select

    report("reading rows")
    rows = list(
        job.source.training_rows.order_by("row").values_list(
            "row", "anchor", "positive", "negatives", "score"
        )
    )
    target = _target_texts(job)
    if not target:
        raise CurationError("The target set has no texts.")
    if job.params["field"] == "anchor":
        raw = [a for _, a, _, _, _ in rows]
    else:
        raw = [f"{a} {p}" for _, a, p, _, _ in rows]
    report("fitting importance weights")
    selection = dsir_select(
        raw_texts=raw, target_texts=target, k=job.params["k"], seed=job.params["seed"]
    )
    report.check()
    result = {
        "rows": len(rows),
        "k": job.params["k"],
        "target_texts": len(target),
        "kl_raw": selection.kl_raw,
        "kl_selected": selection.kl_selected,
        "kl_random": selection.kl_random,
        "kl_reduction": selection.kl_reduction,
        "kl_reduction_random": selection.kl_reduction_random,
    }
    with transaction.atomic():
        made = {}
        for operation, picked, kl in (
            ("dsir_select", selection.selected, selection.kl_selected),
            ("random_subset", selection.random, selection.kl_random),
        ):
            version, created = _new_version(
                dataset=job.source.dataset,
                content_hash=_derived_hash(job, operation),
                kind=DatasetVersion.Kind.TRAINING,
                parent=job.source,
                params={
                    "operation": operation,
                    "source_version": job.source.pk,
                    **job.params,
                    "kl_to_target": kl,
                    "kl_source_to_target": selection.kl_raw,
                },
                source=f"{job.source} {operation.replace('_', ' ')} (job {job.pk})",
                training_count=len(picked),
                training_roles=job.source.training_roles,
            )
            if created:
                loader.load_training_rows(version, [rows[i] for i in picked])
                _record_health(version)
            made[operation] = version
    return {
        "result": result,
        "version": made["dsir_select"],
        "baseline_version": made["random_subset"],
        "stage": "done",
    }


def _run_tokens(job: CurationJob, report: ProgressReporter) -> dict:
    from workers.ml.encode import document_text
    from workers.ml.tokens import length_summary, load_tokenizer, token_lengths

    source, model = job.source, job.model
    report("loading tokenizer")
    tokenizer = load_tokenizer(model.path)
    if source.kind == DatasetVersion.Kind.RETRIEVAL:
        groups = {
            "documents": [
                model.document_prefix + document_text(t, x)
                for t, x in source.documents.order_by("pk").values_list("title", "text")
            ],
            "queries": [
                model.query_prefix + t
                for t in source.queries.order_by("pk").values_list("text", flat=True)
            ],
        }
    else:
        rows = source.training_rows.order_by("row")
        groups = {
            "anchors": [model.query_prefix + a for a in rows.values_list("anchor", flat=True)],
            "positives": [
                model.document_prefix + p for p in rows.values_list("positive", flat=True)
            ],
        }
    summary = {"model": model.name, "max_seq_length": model.max_seq_length}
    for name, texts in groups.items():
        lengths = token_lengths(
            tokenizer=tokenizer,
            texts=texts,
            on_progress=lambda done, total, name=name: report(f"tokenizing {name}", done, total),
        )
        summary[name] = length_summary(lengths, max_length=model.max_seq_length)
    report.check()
    with transaction.atomic():
        # Stats are an annotation of the immutable rows; lock so two jobs do not lose one.
        locked = DatasetVersion.objects.select_for_update().get(pk=source.pk)
        stats = dict(locked.stats)
        stats.setdefault("tokens", {})[str(model.pk)] = summary
        locked.stats = stats
        locked.save(update_fields=["stats"])
    return {"result": summary, "stage": "done"}


# --- review of a semantic dedup ---------------------------------------------------------------


def _copy_retrieval(*, source: DatasetVersion, target: DatasetVersion, drop: list[int]) -> None:
    """Copy documents (minus ``drop``), queries and judgements in the database itself."""
    doc, query, qrel = Document._meta.db_table, Query._meta.db_table, Qrel._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {doc} (version_id, doc_id, title, text, metadata) "
            f"SELECT %s, doc_id, title, text, metadata FROM {doc} WHERE version_id = %s "
            "ORDER BY id",
            [target.pk, source.pk],
        )
        dropped_ids = list(Document.objects.filter(pk__in=drop).values_list("doc_id", flat=True))
        for start in range(0, len(dropped_ids), 500):
            Document.objects.filter(
                version=target, doc_id__in=dropped_ids[start : start + 500]
            ).delete()
        cursor.execute(
            f"INSERT INTO {query} (version_id, query_id, text, metadata) "
            f"SELECT %s, query_id, text, metadata FROM {query} WHERE version_id = %s ORDER BY id",
            [target.pk, source.pk],
        )
        # Judged documents are never dropped, so every judgement finds its document again.
        cursor.execute(
            f"INSERT INTO {qrel} (version_id, split, query_id, document_id, score) "
            f"SELECT %s, r.split, nq.id, nd.id, r.score FROM {qrel} r "
            f"JOIN {query} oq ON oq.id = r.query_id "
            f"JOIN {query} nq ON nq.version_id = %s AND nq.query_id = oq.query_id "
            f"JOIN {doc} od ON od.id = r.document_id "
            f"JOIN {doc} nd ON nd.version_id = %s AND nd.doc_id = od.doc_id "
            "WHERE r.version_id = %s ORDER BY r.id",
            [target.pk, target.pk, target.pk, source.pk],
        )


def _copy_training(*, source: DatasetVersion, target: DatasetVersion, drop: list[int]) -> None:
    table = TrainingRow._meta.db_table
    row = connection.ops.quote_name("row")  # a keyword in SQL
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (version_id, {row}, anchor, positive, negatives, score) "
            f"SELECT %s, {row}, anchor, positive, negatives, score FROM {table} "
            f"WHERE version_id = %s ORDER BY {row}",
            [target.pk, source.pk],
        )
    for start in range(0, len(drop), 500):
        TrainingRow.objects.filter(version=target, row__in=drop[start : start + 500]).delete()


def curation_accept(*, job: CurationJob) -> DatasetVersion:
    """pending review → accepted: the dedup's version is written (or an identical one reused)."""
    if job.kind != Kind.SEMDEDUP or job.review != CurationJob.Review.PENDING:
        raise CurationError("Only a dedup waiting for review can be accepted.")
    artifact = json.loads((_artifact_dir(job) / "removed.json").read_text(encoding="utf-8"))
    drop = artifact["keys"]
    source = job.source
    retrieval = source.kind == DatasetVersion.Kind.RETRIEVAL
    with transaction.atomic():
        locked = CurationJob.objects.select_for_update().get(pk=job.pk)
        if locked.review != CurationJob.Review.PENDING:
            raise CurationError("This dedup was already reviewed.")
        fields = {
            "kind": source.kind,
            "parent": source,
            "params": {
                "operation": "semdedup",
                "source_version": source.pk,
                "model": job.model.name,
                "removed": len(drop),
                **job.params,
            },
            "source": f"{source} semantic dedup (job {job.pk})",
        }
        if retrieval:
            fields.update(
                document_count=source.document_count - len(drop),
                query_count=source.query_count,
                qrels_counts=source.qrels_counts,
                stats={"document_words": artifact.get("document_words") or {}},
            )
        else:
            fields.update(
                training_count=source.training_count - len(drop),
                training_roles=source.training_roles,
            )
        version, created = _new_version(
            dataset=source.dataset, content_hash=_derived_hash(job, "semdedup"), **fields
        )
        if created:
            if retrieval:
                _copy_retrieval(source=source, target=version, drop=drop)
                counts = dict(
                    version.qrels.values_list("split").annotate(n=Count("id")).order_by("split")
                )
                version.qrels_counts = counts
                version.save(update_fields=["qrels_counts"])
            else:
                _copy_training(source=source, target=version, drop=drop)
            _record_health(version)
        CurationJob.objects.filter(pk=job.pk).update(
            review=CurationJob.Review.ACCEPTED, version=version
        )
    job.refresh_from_db()
    return version


def curation_discard(*, job: CurationJob) -> CurationJob:
    updated = CurationJob.objects.filter(pk=job.pk, review=CurationJob.Review.PENDING).update(
        review=CurationJob.Review.DISCARDED
    )
    if not updated:
        raise CurationError("Only a dedup waiting for review can be discarded.")
    job.refresh_from_db()
    return job
