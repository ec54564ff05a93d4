"""Semantic dedup (SemDeDup) of a version's documents or training rows.

Nothing is written but the list of what would go (``removed.json`` in the job's folder): the job
ends waiting for review, and accepting it (``apps.datasets.curation.curation_accept``) makes the
new version.
"""

from __future__ import annotations

import json
from collections import Counter

from apps.datasets.models import CurationJob, DatasetVersion
from apps.datasets.services import curation_artifact_dir
from workers.common.configs.curation import SemDedupConfig
from workers.tasks.curation import common
from workers.tasks.runtime import ProgressReporter

EXAMPLE_PAIRS = 20  # near-duplicate pairs shown before accepting a dedup


def run(*, job: CurationJob, config: SemDedupConfig, report: ProgressReporter) -> dict:
    import numpy as np

    from workers.common.atomic import atomic_write
    from workers.ml.encode import document_text
    from workers.ml.semdedup import semdedup

    source = job.source
    report("reading rows")
    if source.kind == DatasetVersion.Kind.RETRIEVAL:
        docs = common.documents(source)
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
    precision = common.job_precision(job, config)
    encoder = common.encoder_for(job.model)
    device = str(encoder.device)
    try:
        if source.kind == DatasetVersion.Kind.TRAINING:
            vectors = common.encode(encoder, texts, stage="encoding", report=report,
                                    model=job.model, precision=precision)  # fmt: skip
        else:
            vectors = common.document_vectors(
                job,
                ids=labels,
                precision=precision,
                encode=lambda enc=encoder: common.encode(
                    enc,
                    texts,
                    stage="encoding",
                    report=report,
                    model=job.model,
                    precision=precision,
                    prefix=job.model.document_prefix,
                ),
            )
    finally:
        del encoder
        common.free_encoder(device)
    report("clustering", 0, len(texts))
    out = semdedup(
        vectors,
        threshold=config.threshold,
        n_clusters=config.clusters or None,
        protected=protected,
        seed=config.seed,
        on_progress=lambda done, total: report("clustering", done, total),
    )
    removed = [keys[i] for i in np.flatnonzero(~out.keep)]
    # Borderline pairs (just over the threshold) are where a threshold is judged; show those.
    shown = sorted(out.pairs, key=lambda p: p[2])[:EXAMPLE_PAIRS]
    kept_words = None
    if word_counts is not None:
        counted = Counter(w for w, k in zip(word_counts, out.keep, strict=True) if k)
        kept_words = {str(k): v for k, v in sorted(counted.items())}
    folder = curation_artifact_dir(job=job)
    with atomic_write(folder / "removed.json", "w") as fh:
        fh.write(json.dumps({"keys": removed, "document_words": kept_words}))
    from workers.common.store import artifact_publish

    artifact_publish(folder / "removed.json")  # the web reads it on accept, on its own host
    report.check()
    return {
        "stage": "done",
        "review": CurationJob.Review.PENDING,
        "result": {
            "items": len(texts),
            "precision": precision,
            "removed": out.removed,
            "kept": len(texts) - out.removed,
            "clusters": out.n_clusters,
            "largest_cluster": out.largest_cluster,
            "protected": int(protected.sum()) if protected is not None else 0,
            "similarity": common.histogram(
                [p[2] for p in out.pairs], bins=20, lo=config.threshold, hi=1.0
            ),
            "examples": [
                {
                    "removed": labels[a],
                    "removed_text": common.trim(texts[a]),
                    "kept": labels[b],
                    "kept_text": common.trim(texts[b]),
                    "cosine": round(cos, 4),
                }
                for a, b, cos in shown
            ],
        },
    }
