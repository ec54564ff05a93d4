from django import forms


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
        help_text="A BEIR folder as one .zip / .tar.gz, or its files: corpus.jsonl, "
        "queries.jsonl and one <split>.tsv per split (gzip allowed)."
    )
