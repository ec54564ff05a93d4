from django import forms

from apps.core.configforms import config_form
from apps.core.models import JobStatus
from apps.registry.models import EmbeddingModel
from workers.common.configs.evaluation import FUSION_FIELDS, EvaluationConfig
from workers.common.configs.training import RERANKER_LOSSES, SPARSE_LOSSES, TrainOptions

RERANK_FIELDS = ("first_stage", "k_prime")


class FirstStageChoice(forms.ModelChoiceField):
    def label_from_instance(self, obj) -> str:
        ndcg = obj.metrics.get("ndcg@10")
        figure = f", nDCG@10 {ndcg:.4f}" if isinstance(ndcg, int | float) else ""
        return f"#{obj.pk} {obj.label} on {obj.split}{figure}"


class ModelChoice(forms.ModelChoiceField):
    def label_from_instance(self, obj) -> str:
        role = {"reranker": " (reranker)", "sparse": " (sparse)"}.get(obj.role, "")
        return f"{obj}{role}"


class EvaluationForm(
    config_form(EvaluationConfig, exclude=("model", "first_stage", "lexical_model"))
):
    """An evaluation of this version: the config's method and split, the model chosen from the
    team's (the config names it by id), and for a rerank the first stage chosen from this
    version's succeeded evaluations."""

    model = ModelChoice(queryset=EmbeddingModel.objects.none(), empty_label=None, required=False)
    first_stage = FirstStageChoice(
        queryset=None,
        required=False,
        empty_label="(choose the evaluation to rerank)",
        help_text="a succeeded evaluation of this version; the rerank runs on its split",
    )
    lexical_model = ModelChoice(
        queryset=None,
        required=False,
        empty_label="BM25 (bm25s)",
        label="Lexical side",
        help_text="BM25, or a sparse model (SPLADE) of your team",
    )
    split = forms.ChoiceField(choices=())
    tune_split = forms.ChoiceField(choices=(), required=False)

    def __init__(self, *args, team, version, **kwargs):
        super().__init__(*args, **kwargs)
        models = EmbeddingModel.objects.filter(team=team).order_by("name")
        self.fields["model"].queryset = models
        self.fields["model"].initial = models.filter(role="embedding").first()
        self.fields["lexical_model"].queryset = models.filter(role="sparse")
        from apps.runs.models import Evaluation

        self.fields["first_stage"].queryset = (
            Evaluation.objects.filter(
                dataset_version=version, status=JobStatus.SUCCEEDED, team=team
            )
            .exclude(run_file="")
            .select_related("model", "first_stage__model")
            .order_by("-pk")
        )
        splits = version.splits
        self.fields["split"].choices = [
            (s, f"{s} ({version.qrels_counts[s]:,} judgements)") for s in splits
        ]
        if "test" in splits:
            self.fields["split"].initial = "test"
        self.fields["tune_split"].choices = [("", "(none: use the dense weight as given)")] + [
            (s, s) for s in splits
        ]
        self.fields["tune_split"].help_text = EvaluationConfig.model_fields[
            "tune_split"
        ].description.removeprefix("hybrid weighted: ")
        self.order_fields(["method", "model", "split"])
        # The choice labels say what the config's help says; the card has no room for both.
        self.fields["method"].help_text = ""
        self.fields["precision"].help_text = (
            "auto: bf16 on hardware that has it, once the model's bf16 evaluation matched its "
            "fp32 one"
        )

    def config_values(self) -> dict:
        values = super().config_values()
        if model := self.cleaned_data.get("model"):
            values["model"] = model.pk
        if (first := self.cleaned_data.get("first_stage")) and values.get("method") == "rerank":
            # A rerank runs on its first stage's split (the paired test needs the same queries).
            values["first_stage"], values["split"] = first.pk, first.split
        if (lexical := self.cleaned_data.get("lexical_model")) and values.get("method") == "hybrid":
            values["lexical_model"] = lexical.pk
        return values

    def clean(self):
        data = super().clean()
        if self.config is not None and self.config.method != "bm25" and not data.get("model"):
            self.add_error("model", "Choose a model (BM25 needs none).")
        return data

    @property
    def main_fields(self) -> list:
        return [f for f in self if f.name not in FUSION_FIELDS + RERANK_FIELDS]

    @property
    def rerank_fields(self) -> list:
        """Shown apart, folded: they matter to method rerank only."""
        return [f for f in self if f.name in RERANK_FIELDS]

    @property
    def hybrid_fields(self) -> list:
        """Shown apart, folded: they matter to method hybrid only."""
        return [f for f in self if f.name in FUSION_FIELDS]


PRECISIONS = [
    ("fp32", "fp32"),
    ("bf16", "bf16 (GPU, or CPU with AVX-512 BF16/AMX)"),
    ("fp16", "fp16 (CUDA)"),
]


class TrainingRunForm(config_form(TrainOptions, exclude=("device", "bf16", "fp16"))):
    """A fine-tune: the fields of :class:`TrainOptions` (defaults, bounds and help from there),
    the objects it runs on chosen from the team's, and one precision choice for the config's
    bf16/fp16 pair. Empty optional fields take the config's defaults."""

    name = forms.CharField(required=False, max_length=200)
    base_model = ModelChoice(queryset=EmbeddingModel.objects.none(), empty_label=None)
    train_version = forms.ModelChoiceField(queryset=None, empty_label=None,
                                           label="Training data")  # fmt: skip
    eval_version = forms.ModelChoiceField(queryset=None, required=False,
                                          label="Evaluate on")  # fmt: skip
    eval_split = forms.CharField(required=False, initial="test", max_length=50)
    guide_model = forms.ModelChoiceField(
        queryset=EmbeddingModel.objects.none(), required=False, help_text="gist: the guide"
    )
    precision = forms.ChoiceField(choices=PRECISIONS, initial="fp32", help_text="mixed precision")

    field_order = [
        "name", "base_model", "train_version", "eval_version", "eval_split",
        "method", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "merge_lora",
        "loss", "scale", "mini_batch_size", "guide_model", "gist_temperature", "matryoshka_dims",
        "starbucks_pairs", "kl_div_weight", "kl_temperature",
        "pooling", "normalize", "query_prefix", "document_prefix", "max_seq_length",
        "batch_size", "learning_rate", "epochs", "max_steps", "warmup_ratio", "weight_decay",
        "seed", "precision", "gradient_checkpointing", "num_negatives", "no_duplicates",
    ]  # fmt: skip

    def __init__(self, *args, team, **kwargs):
        super().__init__(*args, **kwargs)
        from apps.datasets.models import DatasetVersion

        models = EmbeddingModel.objects.filter(team=team).order_by("name")
        # Rerankers train only with a reranker loss, sparse models with splade (the service says).
        self.fields["base_model"].queryset = models.filter(
            role__in=("embedding", "reranker", "sparse")
        )
        self.fields["guide_model"].queryset = models.filter(role="embedding")
        versions = DatasetVersion.objects.filter(dataset__team=team).select_related("dataset")
        self.fields["train_version"].queryset = versions.filter(kind="training").order_by(
            "dataset__name", "-number"
        )
        self.fields["eval_version"].queryset = versions.filter(kind="retrieval").order_by(
            "dataset__name", "-number"
        )
        # Unset is the model's own setting, not "unknown".
        self.fields["normalize"].widget.choices = [
            ("unknown", "as the model"), ("true", "yes"), ("false", "no")
        ]  # fmt: skip

    def config_values(self) -> dict:
        values = super().config_values()
        precision = self.cleaned_data.get("precision") or "fp32"
        values.update(bf16=precision == "bf16", fp16=precision == "fp16")
        return values

    def clean(self):
        data = super().clean()
        if data.get("loss") == "gist" and not data.get("guide_model"):
            self.add_error("guide_model", "GISTEmbed needs a guide model.")
        return data


# The training form in groups, in this order; a group's "when" shows it only for that method
# or loss (the page's script toggles it); what is not listed falls into "More settings".
TRAINING_GROUPS = [
    ("What to train", "name base_model train_version eval_version eval_split method loss", None),
    ("LoRA", "lora_r lora_alpha lora_dropout lora_target_modules merge_lora", "method=lora"),
    (
        "Loss settings",
        "scale mini_batch_size guide_model gist_temperature matryoshka_dims "
        "starbucks_pairs kl_div_weight kl_temperature",
        # Dense embedding losses' settings: a reranker or sparse loss takes none of them.
        "loss!=" + "|".join(RERANKER_LOSSES + SPARSE_LOSSES),
    ),  # fmt: skip
    ("SPLADE", "document_regularizer_weight query_regularizer_weight", "loss=splade"),
    (
        "Optimisation",
        "batch_size learning_rate epochs max_steps warmup_ratio precision num_negatives",
        None,
    ),  # fmt: skip
]


def training_groups(form) -> list[dict]:
    """The form's bound fields grouped for the page: [{title, fields, when, folded}]."""
    placed = {name for _, names, _ in TRAINING_GROUPS for name in names.split()}
    groups = [
        {"title": title, "fields": [form[n] for n in names.split() if n in form.fields],
         "when": when, "folded": False}
        for title, names, when in TRAINING_GROUPS
    ]  # fmt: skip
    rest = [form[n] for n in form.fields if n not in placed]
    groups.append({"title": "More settings", "fields": rest, "when": None, "folded": True})
    return [g for g in groups if g["fields"]]
