from __future__ import annotations

from django import forms

from apps.indexes.models import PARAM_TYPES, IndexType
from apps.registry.models import EmbeddingModel


class IndexBuildForm(forms.Form):
    """An index build. Empty parameters take workers.ml.indexing.IndexSpec's defaults."""

    model = forms.ModelChoiceField(queryset=EmbeddingModel.objects.none(), empty_label=None)
    dataset_version = forms.ModelChoiceField(queryset=None, empty_label=None, label="Documents")
    index_type = forms.ChoiceField(choices=IndexType.choices, label="Type")
    dim = forms.IntegerField(
        required=False, min_value=1, label="Matryoshka dims", help_text="first d dims; empty: all"
    )
    pca_dim = forms.IntegerField(
        required=False, min_value=1, label="PCA dims", help_text="empty: no PCA"
    )
    hnsw_m = forms.IntegerField(required=False, min_value=2, label="M", help_text="default 32")
    ef_construction = forms.IntegerField(
        required=False, min_value=1, label="efConstruction", help_text="default 200"
    )
    ef_search = forms.IntegerField(
        required=False, min_value=1, label="efSearch", help_text="default 64"
    )
    nlist = forms.IntegerField(required=False, min_value=1, help_text="empty: about 4·√n")
    nprobe = forms.IntegerField(required=False, min_value=1, help_text="default 16")
    pq_m = forms.IntegerField(
        required=False, min_value=1, label="PQ m", help_text="sub-quantizers; empty: about dim/8"
    )
    pq_nbits = forms.IntegerField(
        required=False, min_value=1, max_value=16, label="PQ bits", help_text="default 8"
    )
    rescore = forms.IntegerField(
        required=False,
        min_value=0,
        label="Re-score ×",
        help_text="float re-scoring of the top k·×; 0: binary alone (default 4)",
    )

    def __init__(self, *args, team, **kwargs):
        super().__init__(*args, **kwargs)
        from apps.datasets.models import DatasetVersion

        self.fields["model"].queryset = EmbeddingModel.objects.filter(team=team).order_by("name")
        self.fields["dataset_version"].queryset = (
            DatasetVersion.objects.filter(dataset__team=team, kind="retrieval")
            .select_related("dataset")
            .order_by("dataset__name", "-number")
        )

    def params(self) -> dict:
        return {
            name: self.cleaned_data[name]
            for name in PARAM_TYPES
            if self.cleaned_data.get(name) is not None
        }

    def rows(self):
        """(bound field, the index types it applies to or "") in form order."""
        return [(self[name], PARAM_TYPES.get(name, "")) for name in self.fields]
