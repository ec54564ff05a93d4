from __future__ import annotations

from django.db import models

from apps.core.models import Job, TeamOwned, precision_fields

HEADLINE_METRICS = ("ndcg@10", "mrr@10", "recall@100")


class Evaluation(TeamOwned, Job):
    """One model version (or the BM25 baseline) evaluated on one dataset version's split."""

    PROGRESS_UNITS = {"encoding documents": "documents"}

    class Method(models.TextChoices):
        DENSE = "dense", "Dense (model)"
        BM25 = "bm25", "BM25 (bm25s)"
        HYBRID = "hybrid", "Hybrid (dense + BM25)"
        RERANK = "rerank", "Rerank (cross-encoder)"
        SPARSE = "sparse", "Sparse (SPLADE)"

    method = models.CharField(max_length=16, choices=Method.choices, default=Method.DENSE)
    # Empty for BM25, which needs no model.
    model = models.ForeignKey(
        "registry.EmbeddingModel",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="evaluations",
    )
    dataset_version = models.ForeignKey(
        "datasets.DatasetVersion", on_delete=models.PROTECT, related_name="evaluations"
    )
    split = models.CharField(max_length=50)
    top_k = models.PositiveIntegerField(default=100)
    # The encoding settings actually used, copied from the model at creation so later edits to
    # the model record cannot change what this evaluation means.
    max_seq_length = models.PositiveIntegerField()
    query_prefix = models.CharField(max_length=200, blank=True)
    document_prefix = models.CharField(max_length=200, blank=True)
    precision, precision_used = precision_fields()
    metrics = models.JSONField(default=dict, blank=True)
    timings = models.JSONField(default=dict, blank=True)
    document_count = models.PositiveIntegerField(default=0)
    query_count = models.PositiveIntegerField(default=0)
    run_file = models.CharField(max_length=1000, blank=True)
    # The embedding cache entry the documents were read from or written to, and whether it was
    # already there (a hit means this evaluation did not encode the corpus).
    embedding_key = models.CharField(max_length=64, blank=True)
    cache_hit = models.BooleanField(default=False)
    # What-if rows over the same embeddings: {"dim", "precision", "bytes", "ndcg@10", …}.
    sweep = models.JSONField(default=list, blank=True)
    diagnostics = models.JSONField(default=dict, blank=True)
    # A hybrid evaluation's settings (EvaluationConfig.fusion_settings), and after it ran
    # "tuned": {weight, split, curve} when the weight was chosen on another split.
    fusion = models.JSONField(default=dict, blank=True)
    fusion_result = models.JSONField(default=dict, blank=True)
    # A rerank evaluation's first stage: the evaluation whose ranked lists the reranker (the
    # row's model) reorders; ``fusion`` then holds {k_prime}. Deleting the first stage keeps
    # the figures of its reranks.
    first_stage = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="reranks"
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["team", "-created_at"])]

    def __str__(self) -> str:
        return f"Evaluation #{self.pk}: {self.label} on {self.dataset_version} {self.split}"

    @property
    def label(self) -> str:
        """What was evaluated, for tables: the model's name, the method for BM25, and for a
        hybrid the model and the fusion."""
        if self.method == self.Method.HYBRID and self.model_id:
            how = "RRF" if self.fusion.get("fusion") == "rrf" else "weighted"
            return f"{self.model.name} + {self.lexical_name} ({how})"
        if self.method == self.Method.RERANK and self.model_id:
            first = self.first_stage.label if self.first_stage_id else "a deleted first stage"
            return f"{first} → {self.model.name} (top {self.fusion.get('k_prime', '?')})"
        return self.model.name if self.model_id else self.get_method_display()

    @property
    def lexical_name(self) -> str:
        """A hybrid's lexical side: BM25, or the sparse model's name."""
        pk = self.fusion.get("lexical_model")
        if not pk:
            return "BM25"
        from apps.registry.models import EmbeddingModel

        found = EmbeddingModel.objects.filter(pk=pk).values_list("name", flat=True).first()
        return found or "a deleted sparse model"

    @property
    def headline(self) -> list[tuple[str, float | None]]:
        return [(name, self.metrics.get(name)) for name in HEADLINE_METRICS]


class QueryResult(models.Model):
    """Per-query metric values: the primary record from which aggregates can be recomputed."""

    evaluation = models.ForeignKey(Evaluation, on_delete=models.CASCADE, related_name="results")
    query = models.ForeignKey("datasets.Query", on_delete=models.CASCADE, related_name="+")
    metrics = models.JSONField(default=dict)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["evaluation", "query"], name="unique_query_result"),
        ]

    def __str__(self) -> str:
        return f"{self.evaluation_id}/{self.query_id}"


class TrainingRun(TeamOwned, Job):
    """A fine-tune of a registered model on a training version (a job row on the ``gpu`` queue).

    Training itself runs in a child process the worker supervises (so cancel can kill it and
    free the GPU at once); checkpoints go to ``output_dir``. A run whose worker died is put
    back to pending by the reaper and resumes from its last checkpoint, up to ``max_attempts``.
    """

    name = models.CharField(max_length=200)
    base_model = models.ForeignKey(
        "registry.EmbeddingModel", on_delete=models.PROTECT, related_name="training_runs"
    )
    train_version = models.ForeignKey(
        "datasets.DatasetVersion", on_delete=models.PROTECT, related_name="training_runs"
    )
    eval_version = models.ForeignKey(
        "datasets.DatasetVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    eval_split = models.CharField(max_length=50, blank=True)
    config = models.JSONField(default=dict)  # workers.common.configs.training.TrainConfig.to_dict()
    estimate = models.JSONField(default=dict, blank=True)  # memory / steps / time before launch
    output_dir = models.CharField(max_length=1000, blank=True)
    # The curves: [{"step", "epoch", "loss", "learning_rate", "samples_per_s", "eval": {...}}]
    log = models.JSONField(default=list, blank=True)
    log_tail = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    resumed_from = models.CharField(max_length=1000, blank=True)  # last checkpoint used
    result = models.JSONField(default=dict, blank=True)
    result_model = models.ForeignKey(
        "registry.EmbeddingModel",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    evaluation = models.ForeignKey(
        Evaluation, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    # The reaper sends a dead worker's run here again (it resumes from its last checkpoint).
    resume_task = "workers.tasks.training.train"
    max_attempts = 3

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["team", "-created_at"])]

    def __str__(self) -> str:
        return f"Run #{self.pk} {self.name}"
