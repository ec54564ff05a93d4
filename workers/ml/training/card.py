"""The ``README.md`` written next to a trained model: base, data, configuration, metrics."""

from __future__ import annotations

import json
from typing import Any

from workers.common.configs.training import TrainConfig

LOSS_LABELS = {
    "mnrl": "MultipleNegativesRankingLoss",
    "cached_mnrl": "CachedMultipleNegativesRankingLoss",
    "gist": "GISTEmbedLoss",
    "matryoshka": "MatryoshkaLoss(MultipleNegativesRankingLoss)",
    "matryoshka2d": "Matryoshka2dLoss(MultipleNegativesRankingLoss)",
    "starbucks": "StarbucksLoss(MultipleNegativesRankingLoss)",
    "bce": "BinaryCrossEntropyLoss (cross-encoder)",
    "lambdaloss": "LambdaLoss (cross-encoder, listwise)",
    "splade": "SpladeLoss(SparseMultipleNegativesRankingLoss) (sparse encoder, FLOPS-regularised)",
}


def model_card(*, config: TrainConfig, result: dict[str, Any], data: list[dict[str, Any]]) -> str:
    """A README.md for the trained model: base, data summary, configuration, final metrics."""
    from workers.common.inspect import inspect_model_folder

    try:
        base = inspect_model_folder(config.base_model_path)
        base_line = f"`{base.path}` ({base.architecture}, {base.dimension} dimensions)"
    except (OSError, ValueError):
        base_line = f"`{config.base_model_path}`"
    method = (
        f"LoRA (r={config.lora_r}, alpha={config.lora_alpha}, dropout={config.lora_dropout}, "
        f"targets {result.get('lora_target_modules')}), "
        + ("merged into the weights" if config.merge_lora else "saved as an adapter")
        if config.method == "lora"
        else "full fine-tuning"
    )
    anchors = [len(r["anchor"].split()) for r in data]
    positives = [len(r["positive"].split()) for r in data]

    def mean(values: list[int]) -> str:
        return f"{sum(values) / len(values):.1f}" if values else "-"

    reranker, sparse = config.reranker, config.sparse
    title = (
        "# Fine-tuned reranker (cross-encoder)"
        if reranker
        else "# Fine-tuned sparse model (SPLADE)"
        if sparse
        else "# Fine-tuned embedding model"
    )
    lines = [
        "---",
        "library_name: sentence-transformers",
        "pipeline_tag: text-ranking"
        if reranker
        else "pipeline_tag: feature-extraction"
        if sparse
        else "pipeline_tag: sentence-similarity",
        "tags:",
        "- sentence-transformers",
        "- embedhub",
        f"- {config.loss}",
        "---",
        "",
        title,
        "",
        "Trained with EmbedHub (sentence-transformers "
        f"{_version('sentence-transformers')}, transformers {_version('transformers')}).",
        "",
        "## Base model",
        "",
        f"- Base: {base_line}",
        f"- Method: {method}",
        f"- Loss: {LOSS_LABELS[config.loss]}"
        + (
            f", dims {result['matryoshka_dims']}"
            if "matryoshka_dims" in result
            else f", (layer, dim) pairs {result['starbucks_pairs']}"
            if "starbucks_pairs" in result
            else f", positive weight {result['pos_weight']}"
            if "pos_weight" in result
            else f", FLOPS weights: documents {result['document_regularizer_weight']}, queries "
            f"{result['query_regularizer_weight']}"
            if "document_regularizer_weight" in result
            else ""
        ),
        "",
        "## Training data",
        "",
        f"- Rows: {result['rows']} (dropped for too few negatives: {result['rows_dropped']})",
        f"- Hard negatives per row: {result['negatives_per_row']}",
        f"- Mean words: anchor {mean(anchors)}, positive {mean(positives)}",
        f"- Query prefix: `{config.query_prefix}`"
        if config.query_prefix
        else "- Query prefix: none",
        f"- Document prefix: `{config.document_prefix}`"
        if config.document_prefix
        else "- Document prefix: none",
        "",
        "## Training",
        "",
        f"- Steps: {result['steps']} ({result['epochs']} epochs), "
        f"batch size {config.batch_size}, learning rate {result['learning_rate']}",
        f"- Precision: {result['precision']} on {result['device']}",
        f"- Mean training loss: {result['train_loss']:.4f}"
        + (f", last logged: {result['final_loss']:.4f}" if result.get("final_loss") else ""),
        f"- Parameters: {result['trainable_parameters']:,} trainable of "
        f"{result['total_parameters']:,}",
        "",
    ]
    if result.get("metrics"):
        lines += ["## Evaluation", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in sorted(result["metrics"].items())]
        lines.append("")
    usage = (
        [
            "from sentence_transformers import CrossEncoder",
            "",
            'model = CrossEncoder("path/to/this/folder")',
            'scores = model.predict([("a question", "a passage"), ("a question", "another")])',
        ]
        if reranker
        else [
            "from sentence_transformers import SparseEncoder",
            "",
            'model = SparseEncoder("path/to/this/folder")',
            'queries = model.encode_query(["a question"])',
            'documents = model.encode_document(["a passage"])',
            "scores = model.similarity(queries, documents)",
        ]
        if sparse
        else [
            "from sentence_transformers import SentenceTransformer",
            "",
            'model = SentenceTransformer("path/to/this/folder")',
            f'queries = model.encode(["{config.query_prefix}a question"])',
            f'documents = model.encode(["{config.document_prefix}a passage"])',
        ]
    )
    lines += [
        "## Configuration",
        "",
        "```json",
        json.dumps(config.to_dict(), indent=2, sort_keys=True),
        "```",
        "",
        "## Usage",
        "",
        "```python",
        *usage,
        "```",
        "",
    ]
    return "\n".join(lines)


def _version(package: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "?"
