from __future__ import annotations

import math

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse_lazy
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_GET, require_POST

from apps.accounts.decorators import team_required
from apps.accounts.forms import ApiTokenForm, MemberForm, ThrottledAuthenticationForm
from apps.accounts.middleware import SESSION_KEY
from apps.accounts.models import ApiToken, Membership, Role
from apps.accounts.selectors import api_token_list, team_list_for_user
from apps.accounts.services import (
    api_token_create,
    api_token_revoke,
    membership_add_by_username,
)
from apps.accounts.throttling import LoginGate


class LoginView(auth_views.LoginView):
    """Django's sign-in, throttled (``LoginGate``): a locked pair or address gets the form
    again with "Too many failed sign-ins; try again in N minutes" and a 429."""

    template_name = "accounts/login.html"
    form_class = ThrottledAuthenticationForm

    def form_invalid(self, form):
        response = super().form_invalid(form)
        if form.locked_for:
            response.status_code = 429
            response["Retry-After"] = str(math.ceil(form.locked_for))
        return response


# Password reset: Django's own views, the site's templates, URLs in this app's namespace.
password_reset = auth_views.PasswordResetView.as_view(
    template_name="accounts/password_reset_form.html",
    email_template_name="accounts/password_reset_email.txt",
    subject_template_name="accounts/password_reset_subject.txt",
    success_url=reverse_lazy("accounts:password_reset_done"),
)
password_reset_done = auth_views.PasswordResetDoneView.as_view(
    template_name="accounts/password_reset_done.html"
)


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    template_name = "accounts/password_reset_confirm.html"
    success_url = reverse_lazy("accounts:password_reset_complete")

    def form_valid(self, form):
        # A new password lifts the sign-in lock of this user from this address.
        LoginGate(self.request, self.user.get_username()).clear()
        return super().form_valid(form)


password_reset_complete = auth_views.PasswordResetCompleteView.as_view(
    template_name="accounts/password_reset_complete.html"
)


@require_POST
@login_required
def team_switch(request):
    team = team_list_for_user(user=request.user).filter(pk=request.POST.get("team")).first()
    if team is None:
        raise Http404
    request.session[SESSION_KEY] = team.pk
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        target = "core:home"
    return redirect(target)


@require_GET
@team_required()
def team_detail(request):
    return render(
        request,
        "accounts/team.html",
        {
            "members": Membership.objects.filter(team=request.team).select_related("user"),
            "tokens": api_token_list(team=request.team),
            "token_form": ApiTokenForm(),
            "member_form": MemberForm(),
            "new_token": request.session.pop("new_token", None),
        },
    )


@require_POST
@team_required(Role.MEMBER)
def token_create(request):
    form = ApiTokenForm(request.POST)
    if form.is_valid():
        _, raw = api_token_create(
            team=request.team, user=request.user, name=form.cleaned_data["name"]
        )
        # Shown once on the next page, then gone: only its hash is stored.
        request.session["new_token"] = raw
    return redirect("accounts:team")


@require_POST
@team_required(Role.VIEWER)
def token_revoke(request, pk: int):
    """Anyone revokes their own tokens (a viewer included); a team admin anyone's in the team.
    Another's token, for anyone else, is a 404 like a missing one."""
    token = ApiToken.objects.filter(team=request.team, pk=pk).first()
    if token is None:
        raise Http404
    if token.user_id != request.user.pk and not request.membership.allows(Role.ADMIN):
        raise Http404
    api_token_revoke(token=token)
    messages.success(request, f"Token {token.name} ({token.prefix}…) revoked.")
    return redirect("accounts:team")


@require_POST
@team_required(Role.ADMIN)
def member_add(request):
    form = MemberForm(request.POST)
    if form.is_valid():
        try:
            membership_add_by_username(
                team=request.team,
                username=form.cleaned_data["username"],
                role=form.cleaned_data["role"],
            )
        except ValueError as exc:
            messages.error(request, str(exc))
    return redirect("accounts:team")


@sensitive_post_parameters("hub_token")
@require_POST
@team_required(Role.ADMIN)
def hub_token_set(request):
    """The team page's Hub token form (admins): kept encrypted, never shown again."""
    from apps.accounts.services import team_hub_token_set

    token = request.POST.get("hub_token", "") if "remove" not in request.POST else ""
    try:
        team_hub_token_set(team=request.team, token=token, user=request.user)
    except ValueError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "Hub token saved." if token else "Hub token removed.")
    return redirect("accounts:team")
