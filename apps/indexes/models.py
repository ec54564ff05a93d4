"""Index builds (faiss indexes of a model's document embeddings), the deployments that make one
live under a name, and the audit log of every deploy and undeploy."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from apps.core.models import Job, TeamOwned, precision_fields


class IndexType(models.TextChoices):
    FLAT = "flat", "Flat (exact)"
    HNSW = "hnsw", "HNSW"
    IVF_FLAT = "ivf_flat", "IVF-Flat"
    IVF_PQ = "ivf_pq", "IVF-PQ"
    SQ8 = "sq8", "Scalar int8"
    BINARY = "binary", "Binary (sign bits)"
    BINARY_HNSW = "binary_hnsw", "Binary HNSW"


# Which parameter fields apply to which index types (the page hides the rest).
PARAM_TYPES = {
    "dim": "all",
    "pca_dim": "all",
    "hnsw_m": "hnsw binary_hnsw",
    "ef_construction": "hnsw binary_hnsw",
    "ef_search": "hnsw binary_hnsw",
    "nlist": "ivf_flat ivf_pq",
    "nprobe": "ivf_flat ivf_pq",
    "pq_m": "ivf_pq",
    "pq_nbits": "ivf_pq",
    "rescore": "binary binary_hnsw",
}


class IndexBuild(TeamOwned, Job):
    """One faiss index over one model's embeddings of one dataset version.

    ``encoder`` is the exact query encoder the index needs (model fingerprint, pooling,
    prefixes, dimensions, truncation); a deployment copies it and the search process refuses
    the index when the two differ.
    """

    PROGRESS_UNITS = {"encoding documents": "documents encoded", "building": "vectors added"}

    model = models.ForeignKey(
        "registry.EmbeddingModel", on_delete=models.PROTECT, related_name="index_builds"
    )
    dataset_version = models.ForeignKey(
        "datasets.DatasetVersion", on_delete=models.PROTECT, related_name="index_builds"
    )
    index_type = models.CharField(max_length=16, choices=IndexType.choices)
    params = models.JSONField(default=dict, blank=True)  # what the user asked for
    spec = models.JSONField(default=dict, blank=True)  # every parameter, defaults resolved
    split = models.CharField(max_length=50, blank=True)  # the queries the index is measured on
    max_seq_length = models.PositiveIntegerField(default=0)
    query_prefix = models.CharField(max_length=200, blank=True)
    document_prefix = models.CharField(max_length=200, blank=True)
    precision, precision_used = precision_fields()
    embedding_key = models.CharField(max_length=64, blank=True)
    cache_hit = models.BooleanField(default=False)
    encoder = models.JSONField(default=dict, blank=True)
    path = models.CharField(max_length=1000, blank=True)
    document_count = models.PositiveIntegerField(null=True, blank=True)
    dimension = models.PositiveIntegerField(null=True, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    timings = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"Index #{self.pk} ({self.get_index_type_display()})"

    @property
    def spec_items(self) -> list[tuple[str, object]]:
        """The resolved parameters that apply to this type (HNSW has no nprobe)."""
        spec = self.spec or {}
        return [
            (name, spec[name])
            for name, types in PARAM_TYPES.items()
            if spec.get(name) is not None and (types == "all" or self.index_type in types.split())
        ]

    @property
    def label(self) -> str:
        """Type and the parameters that set it apart, e.g. ``HNSW M=32 · 128 dims``."""
        spec = self.spec or {}
        parts = [self.get_index_type_display()]
        t = self.index_type
        if t in (IndexType.HNSW, IndexType.BINARY_HNSW):
            parts.append(f"M={spec.get('hnsw_m')} ef={spec.get('ef_search')}")
        if t in (IndexType.IVF_FLAT, IndexType.IVF_PQ):
            parts.append(f"nlist={spec.get('nlist') or 'auto'} nprobe={spec.get('nprobe')}")
        if t == IndexType.IVF_PQ:
            parts.append(f"PQ{spec.get('pq_m') or 'auto'}×{spec.get('pq_nbits')}")
        if t in (IndexType.BINARY, IndexType.BINARY_HNSW):
            rescore = spec.get("rescore") or 0
            parts.append(f"re-score ×{rescore}" if rescore else "no re-scoring")
        if spec.get("dim"):
            parts.append(f"first {spec['dim']} dims")
        if spec.get("pca_dim"):
            parts.append(f"PCA {spec['pca_dim']}")
        return " · ".join(parts)


NAME_MAX = 100


class Deployment(TeamOwned):
    """A named alias pointing at one index; deploying another index under the same name swaps
    it in the search process without dropping a query."""

    name = models.SlugField(max_length=NAME_MAX)
    index = models.ForeignKey(IndexBuild, on_delete=models.PROTECT, related_name="deployments")
    encoder = models.JSONField(default=dict)  # the query encoder recorded at deploy time
    # Search mode hybrid: DeploymentFusion (rrf_k, candidates, dense_weight); {} = defaults.
    fusion = models.JSONField(default=dict, blank=True)
    # The rerank stage, if any: {model, k_prime, model_name, path, fingerprint, max_length} as
    # deployed (the search process refuses a reranker whose folder changed since); {} = none.
    rerank = models.JSONField(default=dict, blank=True)
    # A query adapter while the name moves to a new model ({} = none): {upgrade, kind, path,
    # sha256, encoder} — the new model's queries, mapped into this index's space.
    adapter = models.JSONField(default=dict, blank=True)
    deployed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["team", "name"], name="unique_deployment_name"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def serving_key(self) -> str:
        return serving_key(team_id=self.team_id, name=self.name)


def serving_key(*, team_id: int, name: str) -> str:
    """A deployment's key in the search process: names are unique per team only, and the
    team comes first so that no name can reach another team's deployment."""
    return f"{team_id}/{name}"


class DeploymentEvent(models.Model):
    """Who deployed or undeployed what, when, from which index to which. Never edited."""

    class Action(models.TextChoices):
        DEPLOY = "deploy", "Deployed"
        SWAP = "swap", "Swapped"
        UNDEPLOY = "undeploy", "Undeployed"
        SETTINGS = "settings", "Search settings changed"

    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="+")
    name = models.SlugField(max_length=100)  # kept when the deployment itself is gone
    action = models.CharField(max_length=16, choices=Action.choices)
    from_index = models.ForeignKey(
        IndexBuild, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    to_index = models.ForeignKey(
        IndexBuild, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The numbers survive the index's deletion (the links above do not): the log stays whole.
    from_number = models.PositiveIntegerField(null=True, blank=True)
    to_number = models.PositiveIntegerField(null=True, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    at = models.DateTimeField(default=timezone.now, db_index=True)
    # A settings change: what it was and what it became, {"fusion": [old, new], "rerank": …}.
    changes = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-pk"]

    def __str__(self) -> str:
        return f"{self.name}: {self.get_action_display()} at {self.at:%Y-%m-%d %H:%M:%S}"


class ModelUpgrade(TeamOwned, Job):
    """Moving a deployment's name to a new model without downtime.

    The job (``workers.tasks.upgrade``) encodes the corpus under both models (through the
    embedding cache), fits the query adapter (new model's query space → the old index's space)
    and writes the compatibility report. Then, each a step the user takes: serve new-model
    queries on the old index through the adapter; re-embed (an index build of the new model on
    the same data, with its own progress); cut over, gated by the paired test of the new model
    against the old on a judged split; roll back to the old index until ``rollback_until``.
    """

    class Kind(models.TextChoices):
        ORTHOGONAL = "orthogonal", "Orthogonal (Procrustes)"
        LINEAR = "linear", "Linear (least squares)"

    PROGRESS_UNITS = {"encoding documents": "documents encoded"}

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="upgrades")
    # The record goes with the index it started from; index_build_delete refuses that index
    # while the upgrade runs or its rollback window is open.
    old_index = models.ForeignKey(IndexBuild, on_delete=models.CASCADE, related_name="+")
    new_model = models.ForeignKey(
        "registry.EmbeddingModel", on_delete=models.PROTECT, related_name="+"
    )
    adapter_kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.ORTHOGONAL)
    split = models.CharField(max_length=50)  # the judged queries of the report and the gate
    precision, precision_used = precision_fields()
    report = models.JSONField(default=dict, blank=True)
    adapter_path = models.CharField(max_length=1000, blank=True)
    adapter_sha256 = models.CharField(max_length=64, blank=True)
    adapter_encoder = models.JSONField(default=dict, blank=True)  # the new model's query encoder
    new_index = models.ForeignKey(
        IndexBuild, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    old_evaluation = models.ForeignKey(
        "runs.Evaluation", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    new_evaluation = models.ForeignKey(
        "runs.Evaluation", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    verdict = models.JSONField(default=dict, blank=True)  # the paired test at cutover
    forced = models.BooleanField(default=False)
    cut_over_at = models.DateTimeField(null=True, blank=True)
    cut_over_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    rollback_until = models.DateTimeField(null=True, blank=True)
    rolled_back_at = models.DateTimeField(null=True, blank=True)
    rolled_back_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"Upgrade #{self.pk} of {self.deployment.name}"

    @property
    def can_roll_back(self) -> bool:
        return bool(
            self.cut_over_at
            and not self.rolled_back_at
            and self.rollback_until
            and timezone.now() < self.rollback_until
        )


class CalibrationMethod(models.TextChoices):
    ISOTONIC = "isotonic", "Isotonic"
    LOGISTIC = "logistic", "Logistic"
    COSINE_ADAPTER = "cosine_adapter", "Cosine-Adapter"


class Calibration(TeamOwned, Job):
    """A deployment's relevance calibration, fitted as a job (``workers.tasks.calibration``): the
    judged split's queries searched on the index the deployment served, each hit labelled by
    the judgements, a mapping from score to P(relevant) fitted and a threshold chosen.

    The deployment's calibration is its latest succeeded one; it was fitted on ``index``, so it
    is stale once the deployment serves another index (a swap enqueues a refit, and the search
    process gets no calibration for the deployment until one for its index succeeds).
    """

    PROGRESS_UNITS = {"encoding queries": "queries encoded"}

    deployment = models.ForeignKey(
        Deployment, on_delete=models.CASCADE, related_name="calibrations"
    )
    index = models.ForeignKey(IndexBuild, on_delete=models.CASCADE, related_name="calibrations")
    params = models.JSONField(default=dict)  # CalibrationConfig's fields
    method = models.CharField(max_length=20, choices=CalibrationMethod.choices)
    # Set by the worker: the fitted mapping the search process applies (workers.ml.calibration),
    # the threshold, and what was measured (ECE, reliability bins, precision/recall).
    model = models.JSONField(default=dict, blank=True)
    threshold = models.FloatField(null=True, blank=True)
    results = models.JSONField(default=dict, blank=True)
    # A refit enqueued by a swap names the calibration it replaces.
    refit_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"Calibration #{self.pk} of {self.deployment_id}"
