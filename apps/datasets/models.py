from __future__ import annotations

from django.db import models
from django.utils import timezone

from apps.core.models import Job, TeamOwned


class Dataset(TeamOwned):
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["team", "name"], name="unique_dataset_name_per_team"),
        ]

    def __str__(self) -> str:
        return self.name

    # From ``versions.all()``: one query, or none where the list prefetched them.
    def _versions(self) -> list[DatasetVersion]:
        return sorted(self.versions.all(), key=lambda v: v.number)

    @property
    def latest_version(self) -> DatasetVersion | None:
        versions = self._versions()
        return versions[-1] if versions else None

    @property
    def collection_version(self) -> DatasetVersion | None:
        """The newest retrieval collection (documents, queries, judgements): what lists show
        first, so that a training set mined from it does not hide it."""
        collections = [v for v in self._versions() if v.kind == "retrieval"]
        return collections[-1] if collections else None

    @property
    def derived_versions(self) -> list[DatasetVersion]:
        """What was made from another version (pairs, mined, deduplicated, selected), newest
        first: the list shows them under the collection."""
        return [v for v in reversed(self._versions()) if v.params.get("operation")]


class DatasetVersion(models.Model):
    """An immutable, content-hashed snapshot of a dataset. Runs, evaluations and indexes always
    name a version, never a dataset, so a result can be traced to the exact data."""

    class Kind(models.TextChoices):
        RETRIEVAL = "retrieval", "Retrieval collection"
        TRAINING = "training", "Training set"

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.RETRIEVAL)
    # For derived versions: what made them (e.g. {"operation": "pairs_from_qrels", "split": …}).
    params = models.JSONField(default=dict, blank=True)
    content_hash = models.CharField(max_length=64, db_index=True)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    source = models.CharField(max_length=500, blank=True)
    document_count = models.PositiveIntegerField(default=0)
    query_count = models.PositiveIntegerField(default=0)
    qrels_counts = models.JSONField(default=dict, blank=True)  # {"test": 339, "train": 919}
    training_count = models.PositiveIntegerField(default=0)
    training_roles = models.JSONField(default=dict, blank=True)  # column → role, as imported
    warnings = models.JSONField(default=list, blank=True)
    stats = models.JSONField(default=dict, blank=True)  # e.g. the words-per-document histogram
    health = models.JSONField(default=dict, blank=True)  # the data health report
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["dataset", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["dataset", "number"], name="unique_version_number"),
            models.UniqueConstraint(fields=["dataset", "content_hash"], name="unique_version_hash"),
        ]

    def __str__(self) -> str:
        return f"{self.dataset.name} v{self.number}"

    # What each derivation is called on pages (params["operation"] → words).
    HOW_MADE = {
        "pairs_from_qrels": "pairs from judgements",
        "mine_negatives": "mined hard negatives",
        "semdedup": "semantic dedup",
        "dsir_select": "DSIR selection",
        "random_subset": "random baseline of a selection",
    }

    @property
    def how_made(self) -> str:
        operation = (self.params or {}).get("operation")
        if operation is None:
            return "uploaded" if self.parent_id is None else "new upload"
        return self.HOW_MADE.get(operation, operation.replace("_", " "))

    @property
    def team(self):
        return self.dataset.team

    @property
    def team_id(self) -> int:
        return self.dataset.team_id

    @property
    def splits(self) -> list[str]:
        return sorted(self.qrels_counts)


class Document(models.Model):
    # No index of its own: the unique (version, doc_id) index serves every lookup by version,
    # and one index fewer makes the COPY of a big corpus faster.
    version = models.ForeignKey(
        DatasetVersion, on_delete=models.CASCADE, related_name="documents", db_index=False
    )
    doc_id = models.CharField(max_length=200)
    title = models.TextField(blank=True)
    text = models.TextField()
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["version", "doc_id"], name="unique_doc_id"),
        ]

    def __str__(self) -> str:
        return self.doc_id


class Query(models.Model):
    version = models.ForeignKey(DatasetVersion, on_delete=models.CASCADE, related_name="queries")
    query_id = models.CharField(max_length=200)
    text = models.TextField()
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        verbose_name_plural = "queries"
        constraints = [
            models.UniqueConstraint(fields=["version", "query_id"], name="unique_query_id"),
        ]

    def __str__(self) -> str:
        return self.query_id


class Qrel(models.Model):
    version = models.ForeignKey(DatasetVersion, on_delete=models.CASCADE, related_name="qrels")
    split = models.CharField(max_length=50)
    query = models.ForeignKey(Query, on_delete=models.CASCADE, related_name="qrels")
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="qrels")
    score = models.IntegerField()

    class Meta:
        indexes = [models.Index(fields=["version", "split"])]
        constraints = [
            models.UniqueConstraint(
                fields=["version", "split", "query", "document"], name="unique_judgement"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.split}: {self.query_id} → {self.document_id} ({self.score})"


class TrainingRow(models.Model):
    """One training example: anchor, positive, optional hard negatives and score."""

    version = models.ForeignKey(
        DatasetVersion, on_delete=models.CASCADE, related_name="training_rows"
    )
    row = models.PositiveIntegerField()  # line in the source file, or order for derived sets
    anchor = models.TextField()
    positive = models.TextField()
    negatives = models.JSONField(default=list, blank=True)
    score = models.FloatField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["version", "row"])]

    def __str__(self) -> str:
        return f"{self.version_id}:{self.row}"


class IngestJob(TeamOwned, Job):
    """An upload being validated and loaded on the ``ingest`` queue (a job row)."""

    PROGRESS_UNITS = {"": "documents"}

    class Kind(models.TextChoices):
        RETRIEVAL = "retrieval", "BEIR collection"
        TRAINING = "training", "Training set"

    dataset_name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.RETRIEVAL)
    # Training files wait for the user to confirm the column roles shown on the page.
    awaiting_confirmation = models.BooleanField(default=False)
    upload_dir = models.CharField(max_length=1000)
    file_names = models.JSONField(default=list)
    total_bytes = models.BigIntegerField(default=0)
    version = models.ForeignKey(
        DatasetVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reused = models.BooleanField(default=False)
    problems = models.JSONField(default=list, blank=True)  # ["FILE:LINE: reason", …]

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Ingest #{self.pk} → {self.dataset_name}"


class CurationJob(TeamOwned, Job):
    """A curation or analysis step over one version (a job row).

    Most kinds end in a new derived version (lineage: parent = ``source``, params recorded);
    semantic dedup first waits for the user to review what it would remove; token lengths
    only annotate the source version's stats.
    """

    class Kind(models.TextChoices):
        SEMDEDUP = "semdedup", "Semantic dedup"
        MINE = "mine", "Hard-negative mining"
        DSIR = "dsir", "Importance-resampling selection (DSIR)"
        TOKENS = "tokens", "Token lengths"

    class Review(models.TextChoices):
        NONE = "", "No review"
        PENDING = "pending", "Waiting for review"
        ACCEPTED = "accepted", "Accepted"
        DISCARDED = "discarded", "Discarded"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    source = models.ForeignKey(
        DatasetVersion, on_delete=models.PROTECT, related_name="curation_jobs"
    )
    model = models.ForeignKey(
        "registry.EmbeddingModel",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="curation_jobs",
    )
    params = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)  # summary shown on the page
    review = models.CharField(max_length=16, choices=Review.choices, blank=True, default="")
    version = models.ForeignKey(
        DatasetVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # DSIR: the same-size random subset, always made beside the selection.
    baseline_version = models.ForeignKey(
        DatasetVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk} on {self.source}"
