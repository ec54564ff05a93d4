from __future__ import annotations

from django.db import models

from apps.core.models import Job, TeamOwned

HEADLINE_METRICS = ("ndcg@10", "mrr@10", "recall@100")


class Evaluation(TeamOwned, Job):
    """One model version evaluated on one dataset version's split (a job row)."""

    model = models.ForeignKey(
        "registry.EmbeddingModel", on_delete=models.PROTECT, related_name="evaluations"
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
    metrics = models.JSONField(default=dict, blank=True)
    timings = models.JSONField(default=dict, blank=True)
    document_count = models.PositiveIntegerField(default=0)
    query_count = models.PositiveIntegerField(default=0)
    run_file = models.CharField(max_length=1000, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["team", "-created_at"])]

    def __str__(self) -> str:
        return f"Evaluation #{self.pk}: {self.model} on {self.dataset_version} {self.split}"

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
