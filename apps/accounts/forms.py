from django import forms
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError

from apps.accounts.models import Role
from apps.accounts.throttling import LoginGate, lockout_message


class ApiTokenForm(forms.Form):
    name = forms.CharField(max_length=100)


class MemberForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)


class ThrottledAuthenticationForm(AuthenticationForm):
    """Django's sign-in form behind ``LoginGate``: a locked username/address pair (or address)
    is refused before the password is checked, so even the right one fails while locked.
    ``locked_for`` then holds the seconds left (the view answers 429)."""

    locked_for: float | None = None

    def clean(self):
        username = self.cleaned_data.get("username")
        if not username or not self.cleaned_data.get("password"):
            return super().clean()  # a missing field: nothing was tried
        gate = LoginGate(self.request, username)
        self.locked_for = gate.locked_for()
        if self.locked_for:
            raise self._locked()
        try:
            cleaned = super().clean()
        except ValidationError as exc:
            if exc.code == "invalid_login":
                self.locked_for = gate.failed()
                if self.locked_for:
                    raise self._locked() from None
            raise
        gate.clear()
        return cleaned

    def _locked(self) -> ValidationError:
        return ValidationError(lockout_message(self.locked_for), code="locked")
