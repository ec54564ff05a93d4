from apps.accounts.selectors import team_list_for_user


def team(request):
    user = getattr(request, "user", None)
    return {
        "current_team": getattr(request, "team", None),
        "current_membership": getattr(request, "membership", None),
        "user_teams": team_list_for_user(user=user) if user is not None else [],
    }
