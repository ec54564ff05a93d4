from django import forms


class ImportFolderForm(forms.Form):
    """Import a BEIR folder already on the server (uploads arrive with the datasets issue)."""

    name = forms.CharField(max_length=200)
    path = forms.CharField(max_length=1000, label="BEIR folder on the server")
