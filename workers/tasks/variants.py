"""What the jobs that derive a model from others (static distillation, optimized variant,
merge) share: the speed of both on the same texts, and the models evaluated on one version, so
that the derived model's page can say what its speed costs
(``apps.registry.selectors.variant_summary``) or how it compares with its parents.

Imports no ML library at module level.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from apps.registry.models import EmbeddingModel
    from workers.tasks.runtime import ProgressReporter

SPEED_TEXTS = 512  # documents encoded by both models to compare their speed


def variant_speed(
    *, job, source: EmbeddingModel, variant: dict, label: str, report: ProgressReporter
) -> dict | None:
    """Documents/s of ``source`` and of the variant (``variant``: path and layout) on the
    first documents of the job's evaluation version (else its vocabulary version); None when
    it has neither. Keys: documents, source_docs_per_s, ``{label}_docs_per_s``, speedup."""
    from workers.ml.distill import encode_speed
    from workers.ml.encode import document_text, free_memory, load_encoder

    sample = job.evaluate_version or getattr(job, "vocabulary_version", None)
    if sample is None:
        return None
    rows = sample.documents.order_by("pk").values_list("title", "text")[:SPEED_TEXTS]
    texts = [source.document_prefix + document_text(t, x) for t, x in rows]
    report("measuring speed", 0, 2 * len(texts))
    speed: dict = {"documents": len(texts)}
    for step, (name, path, layout) in enumerate(
        (("source", source.path, source.layout), (label, variant["path"], variant["layout"]))
    ):
        encoder = load_encoder(path=path, layout=layout, pooling=source.pooling, normalize=True,
                               max_seq_length=source.max_seq_length)  # fmt: skip
        speed[f"{name}_docs_per_s"] = round(encode_speed(encoder=encoder, texts=texts), 1)
        device = str(encoder.device)
        del encoder
        free_memory(device)
        report("measuring speed", len(texts) * (step + 1), 2 * len(texts))
    speed["speedup"] = round(speed[f"{label}_docs_per_s"] / speed["source_docs_per_s"], 2)
    return speed


def variant_evaluations(
    *, job, source: EmbeddingModel, variant: EmbeddingModel, label: str
) -> dict[str, int]:
    """Queue the evaluations of ``source`` and ``variant`` on the job's version and split
    (fp32, so that the comparison is of the models alone; the source's own fp32 evaluation
    there is reused when it exists). {"source": id, label: id}; empty without a version."""
    if job.evaluate_version is None:
        return {}
    return paired_evaluations(
        team=job.team, version=job.evaluate_version, split=job.split, created_by=job.created_by,
        models=[("source", source, True), (label, variant, False)],
    )  # fmt: skip


def paired_evaluations(
    *, team, version, split: str, models: list[tuple[str, EmbeddingModel, bool]], created_by=None
) -> dict[str, int]:
    """Queue an fp32 dense evaluation of each (label, model, reuse) on ``version`` and
    ``split``, so that the comparison page can pair them query by query; where ``reuse``, the
    model's newest succeeded fp32 evaluation there stands in. {label: evaluation id}."""
    from apps.runs.models import Evaluation
    from apps.runs.services import evaluation_create

    out = {}
    for label, model, reuse in models:
        known = None
        if reuse:
            known = Evaluation.objects.filter(
                model=model, dataset_version=version, split=split,
                status="succeeded", precision_used="fp32", method="dense",
            ).order_by("-finished_at").first()  # fmt: skip
        evaluation = known or evaluation_create(
            team=team, model=model, dataset_version=version, split=split,
            precision="fp32", created_by=created_by,
        )  # fmt: skip
        out[label] = evaluation.pk
    return out
