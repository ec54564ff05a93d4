from django.contrib.auth import views as auth_views
from django.urls import path

from apps.accounts import views

app_name = "accounts"
urlpatterns = [
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("password-reset/", views.password_reset, name="password_reset"),
    path("password-reset/sent/", views.password_reset_done, name="password_reset_done"),
    path(
        "password-reset/<uidb64>/<token>/",
        views.PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path("password-reset/done/", views.password_reset_complete, name="password_reset_complete"),
    path("team/", views.team_detail, name="team"),
    path("team/switch/", views.team_switch, name="team_switch"),
    path("team/members/", views.member_add, name="member_add"),
    path("team/tokens/", views.token_create, name="token_create"),
    path("team/tokens/<int:pk>/revoke/", views.token_revoke, name="token_revoke"),
    path("team/hub-token/", views.hub_token_set, name="hub_token"),
]
