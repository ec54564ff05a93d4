"""Token lengths of a version's texts under a model's own tokenizer, recorded in the version's
stats (the share longer than the model's max sequence length is what gets truncated)."""

from __future__ import annotations

from apps.datasets.models import CurationJob, DatasetVersion
from apps.datasets.services import dataset_version_tokens_record
from workers.common.configs.curation import TokensConfig
from workers.tasks.runtime import ProgressReporter


def run(*, job: CurationJob, config: TokensConfig, report: ProgressReporter) -> dict:
    from workers.ml.encode import document_text
    from workers.ml.tokens import length_summary, load_tokenizer, token_lengths

    source, model = job.source, job.model
    report("loading tokenizer")
    from workers.common.store import artifact_ensure

    tokenizer = load_tokenizer(str(artifact_ensure(model.path)))
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
    dataset_version_tokens_record(version=source, model_pk=model.pk, summary=summary)
    return {"result": summary, "stage": "done"}
