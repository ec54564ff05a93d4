from __future__ import annotations

from django.db import models

from apps.core.models import TeamOwned


class Pooling(models.TextChoices):
    MEAN = "mean", "Mean"
    CLS = "cls", "CLS token"
    MAX = "max", "Max"
    LASTTOKEN = "lasttoken", "Last token"


class EmbeddingModel(TeamOwned):
    """A registered embedding model: a base model from a local folder or an installed package,
    or (later) a fine-tuned version of one. Everything needed to encode exactly as it was
    trained — pooling, normalisation, prefixes, max length — is recorded here and used the
    same way at evaluation, indexing and query time."""

    class Kind(models.TextChoices):
        BASE = "base", "Base model"
        FINETUNED = "finetuned", "Fine-tuned"

    class Source(models.TextChoices):
        FOLDER = "folder", "Local folder"
        PACKAGE = "package", "Installed package"

    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.BASE)
    source = models.CharField(max_length=16, choices=Source.choices)
    source_ref = models.CharField(max_length=500, help_text="Folder path or package name.")
    path = models.CharField(max_length=1000, help_text="Absolute path of the model folder.")
    layout = models.CharField(max_length=32)
    architecture = models.CharField(max_length=100, blank=True)
    dimension = models.PositiveIntegerField()
    max_seq_length = models.PositiveIntegerField()
    pooling = models.CharField(max_length=16, choices=Pooling.choices, default=Pooling.MEAN)
    normalize = models.BooleanField(default=True)
    query_prefix = models.CharField(max_length=200, blank=True)
    document_prefix = models.CharField(max_length=200, blank=True)
    parameters = models.BigIntegerField(null=True, blank=True)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["team", "name"], name="unique_model_name_per_team"),
        ]

    def __str__(self) -> str:
        return self.name

    def encoder_settings(self, **overrides) -> dict:
        """How to encode with this model (folder, layout and the registered encoding), with a
        job's own choices (max length, prefixes) over them: the one place both the encoders
        and the training config read a model's settings from."""
        return {
            "path": self.path,
            "layout": self.layout,
            "pooling": self.pooling,
            "normalize": self.normalize,
            "max_seq_length": self.max_seq_length,
            "query_prefix": self.query_prefix,
            "document_prefix": self.document_prefix,
            **overrides,
        }
