"""The model card a model is published to the Hub with: how it encodes, where it came from
(every ancestor, the run, the merge) and what it scored in this team's evaluations. Built from
the rows alone, so the page can show it before anything is pushed."""

from __future__ import annotations

import json

from apps.core.models import JobStatus
from apps.registry.models import EmbeddingModel


def _ancestors(model: EmbeddingModel) -> list[EmbeddingModel]:
    chain, seen = [], {model.pk}
    parent = model.parent
    while parent is not None and parent.pk not in seen:
        chain.append(parent)
        seen.add(parent.pk)
        parent = parent.parent
    return chain


def _hub_repo(model: EmbeddingModel) -> str:
    if model.source == EmbeddingModel.Source.HUB:
        return model.source_ref.split("@", 1)[0]
    return ""


def model_card_text(*, model: EmbeddingModel) -> str:
    from apps.runs.models import Evaluation, TrainingRun

    ancestors = _ancestors(model)
    base_repo = next((r for r in (_hub_repo(a) for a in [model, *ancestors]) if r), "")
    front = ["---", "library_name: sentence-transformers", "tags:", "- sentence-transformers",
             "- embedhub"]  # fmt: skip
    if model.role == EmbeddingModel.Role.RERANKER:
        front += ["- cross-encoder", "pipeline_tag: text-ranking"]
    else:
        front += ["- sentence-similarity", "pipeline_tag: sentence-similarity"]
    if base_repo and base_repo != _hub_repo(model):
        front.append(f"base_model: {base_repo}")
    front.append("---")
    lines = [*front, "", f"# {model.name}", "",
             f"{model.get_kind_display()} {model.get_role_display().lower()}, made and measured "
             "with EmbedHub.", "", "## Encoding", "",
             f"- Dimension: {model.dimension}" if model.role == "embedding" else "- Cross-encoder",
             f"- Max sequence length: {model.max_seq_length} tokens",
             f"- Pooling: {model.get_pooling_display()}"
             + (", normalised" if model.normalize else ""),
             f"- Query prefix: `{model.query_prefix}`" if model.query_prefix else None,
             f"- Document prefix: `{model.document_prefix}`" if model.document_prefix else None,
             ]  # fmt: skip
    lines += ["", "## Lineage", ""]
    for a in ancestors:
        where = f" (Hub: `{_hub_repo(a)}`)" if _hub_repo(a) else ""
        lines.append(f"- from {a.get_kind_display().lower()} **{a.name}**{where}")
    run = TrainingRun.objects.filter(result_model=model).select_related("train_version").first()
    if run is not None:
        c = run.config
        lines.append(
            f"- fine-tuned: {c.get('method')} with loss {c.get('loss')}, "
            f"{run.result.get('steps', '?')} steps, batch {c.get('batch_size')}, learning rate "
            f"{c.get('learning_rate')}, on {run.train_version.training_count} training rows"
        )
    if model.merge:
        parents = ", ".join(f"{p.get('name')} × {p.get('weight')}"
                            for p in model.merge.get("parents", []))  # fmt: skip
        lines.append(f"- merged ({model.merge.get('method')}): {parents}")
    if model.optimization:
        o = model.optimization
        lines.append(f"- optimized: {o.get('backend', '')} {o.get('quantization', '')}".rstrip())
    if not ancestors and run is None and not model.merge:
        lines.append("- a base model")
    evaluations = (
        Evaluation.objects.filter(model=model, status=JobStatus.SUCCEEDED)
        .select_related("dataset_version__dataset")
        .order_by("dataset_version__dataset__name", "split", "-finished_at")
    )
    rows = [f"| {e.dataset_version} | {e.split} | {e.method} | "
            + " | ".join(f"{e.metrics[m]:.4f}" if m in e.metrics else "—"
                         for m in ("ndcg@10", "mrr@10", "recall@100")) + " |"
            for e in evaluations[:20]]  # fmt: skip
    if rows:
        lines += ["", "## Evaluation", "",
                  "| data | split | method | nDCG@10 | MRR@10 | Recall@100 |",
                  "| --- | --- | --- | --- | --- | --- |", *rows]  # fmt: skip
    lines += ["", "## Use", "", "```python", "from sentence_transformers import "
              + ("CrossEncoder" if model.role == "reranker" else "SentenceTransformer"),
              "model = " + ("CrossEncoder" if model.role == "reranker" else "SentenceTransformer")
              + '("REPO_ID")', "```", ""]  # fmt: skip
    metadata = {"embedhub": {"kind": model.kind, "role": model.role}}
    lines.append(f"<!-- {json.dumps(metadata)} -->")
    return "\n".join(line for line in lines if line is not None) + "\n"
