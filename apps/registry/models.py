from __future__ import annotations

from django.db import models

from apps.core.models import Job, TeamOwned


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
        STATIC = "static", "Static (Model2Vec)"
        OPTIMIZED = "optimized", "Optimized (ONNX)"
        MERGED = "merged", "Merged"

    class Source(models.TextChoices):
        FOLDER = "folder", "Local folder"
        PACKAGE = "package", "Installed package"
        HUB = "hub", "Hugging Face Hub"

    class Role(models.TextChoices):
        # An embedding model maps a text to a vector; a reranker (a sentence-transformers
        # CrossEncoder) scores a (query, document) pair and cannot embed.
        EMBEDDING = "embedding", "Embedding model"
        RERANKER = "reranker", "Reranker (cross-encoder)"
        # A SparseEncoder (SPLADE): a text becomes a sparse vector over the vocabulary.
        SPARSE = "sparse", "Sparse (SPLADE)"

    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.BASE)
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.EMBEDDING)
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
    # An optimized variant: {backend, file, quantization, quantization_config, isa, cosine_min,
    # …} as its job wrote it. Empty for a torch model.
    optimization = models.JSONField(default=dict, blank=True)
    # A derived model's (optimized, static) quality against its parent, once both evaluations
    # ran: {metric, parent_value, value, drop, below_bar, …}; written by variant_quality_record.
    quality = models.JSONField(default=dict, blank=True)
    # A merged model's lineage, as its merge job wrote it: {job, method, parents: [{id, name,
    # weight}], base: {id, name} or None, options}. Empty for any other model.
    merge = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["team", "name"], name="unique_model_name_per_team"),
        ]

    @property
    def public_source(self) -> str:
        """Where it came from, without a server path: a folder's last part only (pages and
        the API show this; the full path stays on the server)."""
        from pathlib import PurePath

        ref = self.source_ref
        if self.source == self.Source.FOLDER and ("/" in ref or "\\" in ref):
            return PurePath(ref).name
        return ref

    def __str__(self) -> str:
        # Wherever a model is offered (every form's choices print this), a variant that lost
        # more quality than the bar allows says so.
        if self.quality.get("below_bar"):
            return f"{self.name} (nDCG@10 −{self.quality['drop'] * 100:.1f} % vs its parent)"
        return self.name

    @property
    def is_reranker(self) -> bool:
        return self.role == self.Role.RERANKER

    @property
    def is_sparse(self) -> bool:
        return self.role == self.Role.SPARSE

    @property
    def below_quality_bar(self) -> bool:
        return bool(self.quality.get("below_bar"))

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


class DistillJob(TeamOwned, Job):
    """A static (Model2Vec) distillation of a registered model: the new model is registered
    with the source as parent, its speed measured against the source's on the same texts, and
    both evaluated on one dataset version so the page can say what the speed costs."""

    PROGRESS_UNITS = {"measuring speed": "documents"}

    source = models.ForeignKey(
        EmbeddingModel, on_delete=models.PROTECT, related_name="distill_jobs"
    )
    params = models.JSONField(default=dict)  # DistillConfig, as asked
    vocabulary_version = models.ForeignKey(
        "datasets.DatasetVersion", null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )  # fmt: skip
    evaluate_version = models.ForeignKey(
        "datasets.DatasetVersion", null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )  # fmt: skip
    split = models.CharField(max_length=50, blank=True)
    result_model = models.ForeignKey(
        EmbeddingModel, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    result = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"Distillation #{self.pk} of {self.source}"


class OptimizeJob(TeamOwned, Job):
    """An optimized (ONNX Runtime, fp32 or int8) variant of a registered model: exported and
    checked against the source's vectors, registered with the source as parent, its speed
    measured against the source's, and both evaluated on one version so the page can show the
    paired comparison and mark a variant that loses too much."""

    PROGRESS_UNITS = {"measuring speed": "documents"}

    source = models.ForeignKey(
        EmbeddingModel, on_delete=models.PROTECT, related_name="optimize_jobs"
    )
    params = models.JSONField(default=dict)  # OptimizeConfig, as asked
    evaluate_version = models.ForeignKey(
        "datasets.DatasetVersion", null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )  # fmt: skip
    split = models.CharField(max_length=50, blank=True)
    result_model = models.ForeignKey(
        EmbeddingModel, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    result = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"Optimization #{self.pk} of {self.source}"

    @property
    def label(self) -> str:
        return f"{self.params.get('backend', 'onnx').upper()} {self.params.get('quantize', 'int8')}"


class HubImport(TeamOwned, Job):
    """A model or a dataset brought in from the Hugging Face Hub by repo id: the revision
    resolved to one commit (``sha``), the files downloaded into the artifact store with
    progress, then registered (a model) or validated and imported like an upload (a dataset)."""

    PROGRESS_UNITS = {"downloading": "bytes"}

    class Kind(models.TextChoices):
        MODEL = "model", "Model"
        DATASET = "dataset", "Dataset"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    repo_id = models.CharField(max_length=200)
    revision = models.CharField(max_length=200, blank=True)  # as asked; empty = main
    sha = models.CharField(max_length=64, blank=True)  # the commit it resolved to
    name = models.CharField(max_length=200)  # the model's or the dataset's name here
    result_model = models.ForeignKey(
        EmbeddingModel, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    result_version = models.ForeignKey(
        "datasets.DatasetVersion", null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )  # fmt: skip
    result = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"Hub import #{self.pk} of {self.repo_id}"

    @property
    def label(self) -> str:
        at = f"@{self.revision}" if self.revision else ""
        return f"{self.repo_id}{at}"


class MergeJob(TeamOwned, Job):
    """A weight-space merge of registered models of one architecture (soup, greedy soup,
    linear, SLERP, TIES, DARE, Model Stock), optionally with a weight search on a dev split:
    the result is registered as a merged model whose lineage names every parent, and it is
    evaluated beside each parent on a test split so the page can show the paired test."""

    PROGRESS_UNITS = {"searching weights": "weights", "greedy soup": "models"}

    # Every model merged in; their order (which the weights follow) is params["models"].
    parents = models.ManyToManyField(EmbeddingModel, related_name="merge_jobs")
    base = models.ForeignKey(
        EmbeddingModel, null=True, blank=True, on_delete=models.PROTECT,
        related_name="merge_base_jobs",
    )  # fmt: skip
    method = models.CharField(max_length=16)
    params = models.JSONField(default=dict)  # MergeConfig, as asked
    evaluate_version = models.ForeignKey(
        "datasets.DatasetVersion", null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )  # fmt: skip
    dev_split = models.CharField(max_length=50, blank=True)
    test_split = models.CharField(max_length=50, blank=True)
    result_model = models.ForeignKey(
        EmbeddingModel, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    result = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"Merge #{self.pk} ({self.method_label})"

    @property
    def method_label(self) -> str:
        from workers.common.configs.merge import METHOD_LABELS

        return METHOD_LABELS.get(self.method, self.method).split(" (")[0]

    @property
    def model_ids(self) -> list[int]:
        return list(self.params.get("models") or [])


class HubPublish(TeamOwned, Job):
    """A registered model pushed to a Hugging Face Hub repo as one commit: its folder and a
    model card generated from what EmbeddingModel records (lineage, evaluations)."""

    PROGRESS_UNITS = {"uploading": "files"}

    model = models.ForeignKey(EmbeddingModel, on_delete=models.CASCADE, related_name="publishes")
    repo_id = models.CharField(max_length=200)
    private = models.BooleanField(default=True)
    sha = models.CharField(max_length=64, blank=True)  # the commit the push made
    result = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"Hub publish #{self.pk} of {self.model} to {self.repo_id}"
