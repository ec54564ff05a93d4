from __future__ import annotations

from django import forms

from apps.core.configforms import config_form
from apps.core.models import Precision
from apps.indexes.models import PARAM_TYPES, IndexType
from apps.registry.models import EmbeddingModel
from workers.common.configs.calibration import CalibrationConfig
from workers.common.configs.encoding import PRECISION_HELP
from workers.common.configs.indexing import IndexParams

# The page leaves these at their defaults (the API and the command may set them).
PAGE_EXCLUDED = ("train_size", "seed", "sparse_model")


class IndexBuildForm(config_form(IndexParams, exclude=PAGE_EXCLUDED)):
    """An index build: the model and version chosen from the team's, the type, and the
    parameters of :class:`IndexParams`; an empty parameter takes the config's default."""

    model = forms.ModelChoiceField(queryset=EmbeddingModel.objects.none(), empty_label=None)
    dataset_version = forms.ModelChoiceField(queryset=None, empty_label=None, label="Documents")
    index_type = forms.ChoiceField(choices=IndexType.choices, label="Type")
    precision = forms.ChoiceField(
        choices=Precision.choices, initial=Precision.AUTO, required=False, help_text=PRECISION_HELP
    )
    # Chosen from the team's sparse models here; the API and the command give its id.
    sparse_model = forms.ModelChoiceField(
        queryset=EmbeddingModel.objects.none(),
        required=False,
        empty_label="none",
        label="Sparse side",
        help_text=IndexParams.model_fields["sparse_model"].description.replace("id of a", "a"),
    )

    field_order = ["model", "dataset_version", "index_type", "precision"]

    def __init__(self, *args, team, **kwargs):
        super().__init__(*args, **kwargs)
        from apps.datasets.models import DatasetVersion

        self.fields["model"].queryset = EmbeddingModel.objects.filter(
            team=team, role="embedding"
        ).order_by("name")
        self.fields["sparse_model"].queryset = EmbeddingModel.objects.filter(
            team=team, role=EmbeddingModel.Role.SPARSE
        ).order_by("name")
        self.fields["dataset_version"].queryset = (
            DatasetVersion.objects.filter(dataset__team=team, kind="retrieval")
            .select_related("dataset")
            .order_by("dataset__name", "-number")
        )
        # Fields start empty, so that only what the user sets is recorded as given; the help
        # says what empty means.
        for name, info in IndexParams.model_fields.items():
            if name in self.fields:
                self.fields[name].initial = None
                if info.default is not None:
                    self.fields[name].help_text = f"{info.description}; default {info.default}"

    def clean_precision(self) -> str:
        return self.cleaned_data.get("precision") or Precision.AUTO  # left out: auto

    def params(self) -> dict:
        """The parameters the user set (checked by the config)."""
        params = self.config.given() if self.config is not None else {}
        if sparse := self.cleaned_data.get("sparse_model"):
            params["sparse_model"] = sparse.pk
        return params

    def rows(self):
        """(bound field, the index types it applies to or "") in form order."""
        return [(self[name], PARAM_TYPES.get(name, "")) for name in self.fields]


class CalibrationForm(
    config_form(CalibrationConfig, exclude=("calibration_share", "held_out_share", "seed"))
):
    """A deployment's relevance calibration: the fields of :class:`CalibrationConfig`, the
    splits chosen from the deployed index's version's judged splits."""

    def __init__(self, *args, splits: list[str], **kwargs):
        from workers.common.configs.calibration import METHOD_LABELS

        super().__init__(*args, **kwargs)
        info = CalibrationConfig.model_fields
        self.fields["split"] = forms.ChoiceField(
            choices=[(s, s) for s in splits], label="Fit on split",
            initial="train" if "train" in splits else (splits[0] if splits else None),
            help_text=info["split"].description,
        )  # fmt: skip
        self.fields["held_out_split"] = forms.ChoiceField(
            choices=[("", "(a held-out share of the fit split's queries)")]
            + [(s, s) for s in splits],
            required=False, label="Measure on split",
            initial="test" if "test" in splits and "train" in splits else "",
            help_text=info["held_out_split"].description,
        )  # fmt: skip
        self.fields["method"].choices = [
            (v, METHOD_LABELS.get(v, label)) for v, label in self.fields["method"].choices
        ]
