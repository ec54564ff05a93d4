from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import NON_FIELD_ERRORS

from apps.core.configforms import ConfigForm, config_form
from apps.datasets.curation import nullable, unknown_parameters_error
from apps.datasets.models import DatasetVersion
from apps.registry.models import EmbeddingModel
from workers.common.configs.curation import (
    DsirConfig,
    MiningConfig,
    MiningOptions,
    SemDedupConfig,
    TokensConfig,
)


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """Several files in one field (Django's documented recipe)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", MultipleFileInput())
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        single = super().clean
        if isinstance(data, list | tuple):
            return [single(d, initial) for d in data]
        return [single(data, initial)]


class UploadForm(forms.Form):
    name = forms.CharField(
        max_length=200, help_text="A new dataset, or an existing one to add a version to."
    )
    files = MultipleFileField(
        # Django does not escape help text: no angle brackets here.
        help_text="A retrieval collection (BEIR): one .zip / .tar.gz, or its files corpus.jsonl, "
        "queries.jsonl and one .tsv of judgements per split, named after it (test.tsv, "
        "train.tsv; gzip allowed). Or a training set: one .jsonl or .csv with anchor and "
        "positive columns and optional negative / negative_1…n and score."
    )


# --- curation (the version page's forms, one per kind, built from the kind's config) ----------


class CurationForm(ConfigForm):
    """What every curation form adds to its config's fields: the team's objects, a field the
    form does not have refused by name (as the API refuses it), and an emptied optional field
    read as none (an empty margin: no margin filter) rather than as the default."""

    kind: str

    def __init__(self, data: Any = None, *, version: DatasetVersion, **kwargs: Any) -> None:
        kwargs.setdefault("auto_id", f"{self.kind}-%s")  # four forms on one page: unique ids
        super().__init__(data, **kwargs)
        self.version = version
        if "model" in self.fields:
            models = EmbeddingModel.objects.filter(
                team=version.dataset.team, role="embedding"
            ).order_by("name")
            if models.exists():
                self.fields["model"].queryset = models
            else:
                del self.fields["model"]

    def config_values(self) -> dict[str, Any]:
        values = super().config_values()
        for name, info in self.config_class.model_fields.items():
            emptied = name in self.fields and str(self.data.get(name, "x")).strip() == ""
            if emptied and name not in values and nullable(info.annotation):
                values[name] = None
        return values

    def clean(self) -> dict[str, Any]:
        unknown = sorted(str(k) for k in self.data if k not in self.fields and k not in _FORM_KEYS)
        if unknown:
            raise forms.ValidationError(
                str(unknown_parameters_error(kind=self.kind, unknown=unknown))
            )
        return super().clean()

    def problems(self) -> list[str]:
        """Each error as one line naming its field, for a message on the version page."""
        return [
            message if field == NON_FIELD_ERRORS else f"{field}: {message}"
            for field, messages in self.errors.items()
            for message in messages
        ]


_FORM_KEYS = ("csrfmiddlewaretoken",)


class _ModelChoice(forms.ModelChoiceField):
    """The team's models (set by the form); the service says when one is needed."""

    def __init__(self, label: str = "Model", **kwargs: Any) -> None:
        super().__init__(
            queryset=EmbeddingModel.objects.none(),
            required=False,
            empty_label=None,
            label=label,
            **kwargs,
        )


class _TokenModelChoice(_ModelChoice):
    def label_from_instance(self, obj: EmbeddingModel) -> str:
        return f"{obj.name} (max {obj.max_seq_length})"


class SemDedupForm(CurationForm, config_form(SemDedupConfig, exclude=("kind",))):
    kind = "semdedup"
    model = _ModelChoice()
    field_order = ("model", "threshold", "clusters", "seed")


class MiningForm(CurationForm, config_form(MiningConfig, exclude=("kind",))):
    kind = "mine"
    model = _ModelChoice()
    field_order = ("split", "candidates", "model", *MiningOptions.model_fields)

    def __init__(self, data: Any = None, *, version: DatasetVersion, **kwargs: Any) -> None:
        super().__init__(data, version=version, **kwargs)
        self.fields["max_score"].widget.attrs["placeholder"] = "none"
        if version.kind != DatasetVersion.Kind.RETRIEVAL:
            del self.fields["split"]  # a training set mines for every anchor
            return
        # Offered as a list; a split the version lacks is still the service's to refuse, so
        # the message says which splits there are.
        split = self.fields["split"]
        split.widget = forms.Select(choices=[(s, s) for s in version.splits])
        split.initial = "train" if "train" in version.qrels_counts else None


class DsirForm(CurationForm, config_form(DsirConfig, exclude=("kind",))):
    kind = "dsir"

    def __init__(self, data: Any = None, *, version: DatasetVersion, **kwargs: Any) -> None:
        super().__init__(data, version=version, **kwargs)
        targets = (
            DatasetVersion.objects.filter(dataset__team=version.dataset.team)
            .select_related("dataset")
            .order_by("dataset__name", "-number")
        )
        # Another team's id is refused by the service, which resolves it in the team.
        self.fields["target"].widget = forms.Select(choices=[(v.pk, str(v)) for v in targets])
        self.fields["target_split"].widget.attrs["placeholder"] = "any"
        k = self.fields["k"]
        k.initial = max(1, version.training_count // 2)
        k.widget.attrs["max"] = max(1, version.training_count - 1)


class TokensForm(CurationForm, config_form(TokensConfig, exclude=("kind",))):
    kind = "tokens"
    model = _TokenModelChoice(label="Count tokens with")


CURATION_FORMS: dict[str, type[CurationForm]] = {
    form.kind: form for form in (SemDedupForm, MiningForm, DsirForm, TokensForm)
}
