from django.contrib.auth import views as auth_views
from django.urls import path

from apps.accounts import views

app_name = "accounts"
urlpatterns = [
    path("login/", auth_views.LoginView.as_view(template_name="accounts/login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("team/", views.team_detail, name="team"),
    path("team/switch/", views.team_switch, name="team_switch"),
    path("team/members/", views.member_add, name="member_add"),
    path("team/tokens/", views.token_create, name="token_create"),
    path("team/tokens/<int:pk>/revoke/", views.token_revoke, name="token_revoke"),
]
