from django import forms

from apps.core.configforms import config_form
from apps.registry.models import EmbeddingModel
from workers.common.configs.evaluation import EvaluationConfig


class EvaluationForm(config_form(EvaluationConfig, exclude=("model",))):
    """An evaluation of this version: the config's method and split, the model chosen from the
    team's (the config names it by id)."""

    model = forms.ModelChoiceField(
        queryset=EmbeddingModel.objects.none(), empty_label=None, required=False
    )
    split = forms.ChoiceField(choices=())

    def __init__(self, *args, team, version, **kwargs):
        super().__init__(*args, **kwargs)
        models = EmbeddingModel.objects.filter(team=team).order_by("name")
        self.fields["model"].queryset = models
        self.fields["model"].initial = models.first()
        splits = version.splits
        self.fields["split"].choices = [
            (s, f"{s} ({version.qrels_counts[s]:,} judgements)") for s in splits
        ]
        if "test" in splits:
            self.fields["split"].initial = "test"
        self.order_fields(["method", "model", "split"])

    def config_values(self) -> dict:
        values = super().config_values()
        if model := self.cleaned_data.get("model"):
            values["model"] = model.pk
        return values

    def clean(self):
        data = super().clean()
        if self.config is not None and self.config.method == "dense" and not data.get("model"):
            self.add_error("model", "Choose a model (BM25 needs none).")
        return data


LOSSES = [
    ("mnrl", "MultipleNegativesRanking (InfoNCE, in-batch + hard negatives)"),
    ("cached_mnrl", "CachedMultipleNegativesRanking (GradCache: big batches, small memory)"),
    ("gist", "GISTEmbed (a guide model filters false in-batch negatives)"),
    ("matryoshka", "Matryoshka over dimensions"),
    ("matryoshka2d", "2D Matryoshka (layers × dimensions, one sampled per step)"),
    ("starbucks", "Starbucks (every (layer, dimension) pair, every step)"),
]


def _int_list(text: str, field: str) -> list[int] | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise forms.ValidationError({field: "A comma-separated list of whole numbers."}) from None


def _pairs(text: str) -> list[list[int]] | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        return [
            [int(a), int(b)] for a, b in (p.split(":") for p in text.replace(" ", "").split(","))
        ]
    except ValueError:
        raise forms.ValidationError(
            {"starbucks_pairs": "Pairs as layer:dimension, comma-separated (2:32,4:64,6:128)."}
        ) from None


class TrainingRunForm(forms.Form):
    """A fine-tune. Empty optional fields take the defaults of the training config."""

    name = forms.CharField(required=False, max_length=200)
    base_model = forms.ModelChoiceField(queryset=EmbeddingModel.objects.none(), empty_label=None)
    train_version = forms.ModelChoiceField(queryset=None, empty_label=None,
                                           label="Training data")  # fmt: skip
    eval_version = forms.ModelChoiceField(queryset=None, required=False,
                                          label="Evaluate on")  # fmt: skip
    eval_split = forms.CharField(required=False, initial="test", max_length=50)
    method = forms.ChoiceField(choices=[("full", "Full"), ("lora", "LoRA (peft)")])
    lora_r = forms.IntegerField(required=False, initial=8, min_value=1, label="LoRA rank")
    lora_alpha = forms.IntegerField(required=False, initial=16, min_value=1, label="LoRA alpha")
    lora_dropout = forms.FloatField(
        required=False, initial=0.1, min_value=0, max_value=0.9, label="LoRA dropout"
    )
    lora_target_modules = forms.CharField(
        required=False, label="LoRA target modules", help_text="empty: attention projections"
    )
    merge_lora = forms.BooleanField(required=False, initial=True, label="Merge the adapter")
    loss = forms.ChoiceField(choices=LOSSES)
    scale = forms.FloatField(required=False, initial=20.0, help_text="1 / temperature")
    mini_batch_size = forms.IntegerField(required=False, initial=32, min_value=1)
    guide_model = forms.ModelChoiceField(queryset=EmbeddingModel.objects.none(), required=False)
    matryoshka_dims = forms.CharField(required=False, help_text="e.g. 384,256,128,64,32")
    starbucks_pairs = forms.CharField(required=False, help_text="layer:dim, e.g. 2:32,4:64,6:128")
    pooling = forms.ChoiceField(
        required=False,
        choices=[("", "as the model"), ("mean", "mean"), ("cls", "CLS"), ("lasttoken", "last")],
    )
    query_prefix = forms.CharField(required=False, max_length=200, strip=False)
    document_prefix = forms.CharField(required=False, max_length=200, strip=False)
    batch_size = forms.IntegerField(initial=32, min_value=1)
    learning_rate = forms.FloatField(required=False, help_text="empty: 2e-5 full, 1e-4 LoRA")
    epochs = forms.FloatField(required=False, initial=1.0, min_value=0.01)
    max_steps = forms.IntegerField(required=False, min_value=1, help_text="overrides epochs")
    warmup_ratio = forms.FloatField(required=False, initial=0.1, min_value=0, max_value=1)
    weight_decay = forms.FloatField(required=False, initial=0.01, min_value=0)
    seed = forms.IntegerField(required=False, initial=42)
    max_seq_length = forms.IntegerField(required=False, min_value=8, help_text="empty: the model's")
    precision = forms.ChoiceField(
        choices=[("fp32", "fp32"), ("bf16", "bf16 (CUDA)"), ("fp16", "fp16 (CUDA)")]
    )
    gradient_checkpointing = forms.BooleanField(required=False)
    num_negatives = forms.IntegerField(
        required=False,
        min_value=0,
        label="Hard negatives per row",
        help_text="empty: the fewest any row has; rows with fewer are dropped",
    )
    no_duplicates = forms.BooleanField(required=False, initial=True)
    eval_steps = forms.IntegerField(required=False, min_value=1, help_text="empty: at the end")
    save_steps = forms.IntegerField(required=False, initial=500, min_value=1)

    def __init__(self, *args, team, **kwargs):
        super().__init__(*args, **kwargs)
        from apps.datasets.models import DatasetVersion

        models = EmbeddingModel.objects.filter(team=team).order_by("name")
        self.fields["base_model"].queryset = models
        self.fields["guide_model"].queryset = models
        versions = DatasetVersion.objects.filter(dataset__team=team).select_related("dataset")
        self.fields["train_version"].queryset = versions.filter(kind="training").order_by(
            "dataset__name", "-number"
        )
        self.fields["eval_version"].queryset = versions.filter(kind="retrieval").order_by(
            "dataset__name", "-number"
        )

    def clean(self):
        data = super().clean()
        data["matryoshka_dims_list"] = _int_list(data.get("matryoshka_dims"), "matryoshka_dims")
        data["starbucks_pairs_list"] = _pairs(data.get("starbucks_pairs"))
        if data.get("loss") == "gist" and not data.get("guide_model"):
            self.add_error("guide_model", "GISTEmbed needs a guide model.")
        return data

    def options(self) -> dict:
        """The TrainConfig overrides (None = the default)."""
        d = self.cleaned_data
        targets = [t.strip() for t in (d.get("lora_target_modules") or "").split(",") if t.strip()]
        return {
            "method": d["method"],
            "lora_r": d.get("lora_r"),
            "lora_alpha": d.get("lora_alpha"),
            "lora_dropout": d.get("lora_dropout"),
            "lora_target_modules": targets or None,
            "merge_lora": bool(d.get("merge_lora")),
            "loss": d["loss"],
            "scale": d.get("scale"),
            "mini_batch_size": d.get("mini_batch_size"),
            "matryoshka_dims": d.get("matryoshka_dims_list"),
            "starbucks_pairs": d.get("starbucks_pairs_list"),
            "pooling": d.get("pooling") or None,
            "query_prefix": d.get("query_prefix") or None,
            "document_prefix": d.get("document_prefix") or None,
            "batch_size": d["batch_size"],
            "learning_rate": d.get("learning_rate"),
            "epochs": d.get("epochs"),
            "max_steps": d.get("max_steps"),
            "warmup_ratio": d.get("warmup_ratio"),
            "weight_decay": d.get("weight_decay"),
            "seed": d.get("seed"),
            "max_seq_length": d.get("max_seq_length"),
            "bf16": d["precision"] == "bf16",
            "fp16": d["precision"] == "fp16",
            "gradient_checkpointing": bool(d.get("gradient_checkpointing")),
            "num_negatives": d.get("num_negatives"),
            "no_duplicates": bool(d.get("no_duplicates")),
            "eval_steps": d.get("eval_steps"),
            "save_steps": d.get("save_steps"),
        }
