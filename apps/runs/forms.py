from django import forms

from apps.registry.models import EmbeddingModel
from apps.runs.models import Evaluation


class EvaluationForm(forms.Form):
    method = forms.ChoiceField(
        choices=Evaluation.Method.choices, initial=Evaluation.Method.DENSE, required=False
    )
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
            (s, f"{s} ({version.qrels_counts[s]} judgements)") for s in splits
        ]
        if "test" in splits:
            self.fields["split"].initial = "test"

    def clean(self):
        data = super().clean()
        data["method"] = data.get("method") or Evaluation.Method.DENSE
        if data["method"] == Evaluation.Method.DENSE and not data.get("model"):
            self.add_error("model", "Choose a model (BM25 needs none).")
        return data
