from django import forms

from apps.registry.models import EmbeddingModel


class EvaluationForm(forms.Form):
    model = forms.ModelChoiceField(queryset=EmbeddingModel.objects.none(), empty_label=None)
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
