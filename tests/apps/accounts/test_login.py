"""Signing in: throttled per username and address (``LoginGate``), and the password reset by
e-mail with Django's own views."""

from __future__ import annotations

import logging
import re
import time

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.urls import reverse

pytestmark = pytest.mark.django_db

LOGIN = "/accounts/login/"
LOCKED = "Too many failed sign-ins; try again in 15 minutes."


@pytest.fixture(autouse=True)
def private_cache(settings):
    # Failures counted in a cache of this test alone: none left by other tests or runs.
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "test-login-throttle",
        }
    }
    from django.core.cache import cache

    cache.clear()


def sign_in(client, username: str, password: str, address: str = "10.0.0.1", **extra):
    return client.post(
        LOGIN, {"username": username, "password": password}, REMOTE_ADDR=address, **extra
    )


def test_the_defaults(settings):
    assert (settings.LOGIN_FAILURE_LIMIT, settings.LOGIN_LOCKOUT_S) == (5, 900)
    assert settings.LOGIN_ADDRESS_FAILURE_LIMIT > settings.LOGIN_FAILURE_LIMIT


def test_five_failures_lock_the_username_from_that_address(client, member, monkeypatch):
    for _ in range(4):
        response = sign_in(client, "member", "wrong")
        assert response.status_code == 200
        assert "Please enter a correct username and password" in response.content.decode()
    locked = sign_in(client, "member", "wrong")
    assert locked.status_code == 429 and LOCKED in locked.content.decode()
    assert locked["Retry-After"] == "900"
    # While locked even the right password is refused, and nobody is logged in.
    right = sign_in(client, "member", "pw-member")
    assert right.status_code == 429 and LOCKED in right.content.decode()
    assert "_auth_user_id" not in client.session
    # Another address is not locked: nobody can lock a user out from elsewhere.
    assert sign_in(client, "member", "pw-member", address="10.0.0.2").status_code == 302
    client.post(reverse("accounts:logout"))
    # Fifteen minutes later the lock has gone.
    later = time.time() + 15 * 60 + 1
    monkeypatch.setattr(time, "time", lambda: later)
    assert sign_in(client, "member", "pw-member").status_code == 302


def test_the_minutes_left_are_shown(client, member, monkeypatch, settings):
    settings.LOGIN_FAILURE_LIMIT = 1
    now = time.time()
    assert sign_in(client, "member", "wrong").status_code == 429
    monkeypatch.setattr(time, "time", lambda: now + 14 * 60 + 30)
    response = sign_in(client, "member", "pw-member")
    assert response.status_code == 429
    assert "Too many failed sign-ins; try again in 1 minute." in response.content.decode()


def test_a_success_resets_the_failures(client, member):
    for _ in range(4):
        assert sign_in(client, "member", "wrong").status_code == 200
    assert sign_in(client, "member", "pw-member").status_code == 302
    client.post(reverse("accounts:logout"))
    for _ in range(4):  # counted from zero again: not locked at the fifth failure overall
        assert sign_in(client, "member", "wrong").status_code == 200
    assert sign_in(client, "member", "wrong").status_code == 429


def test_an_address_trying_many_usernames_is_locked(client, member, settings):
    settings.LOGIN_ADDRESS_FAILURE_LIMIT = 3
    assert sign_in(client, "alice", "x").status_code == 200
    assert sign_in(client, "bob", "x").status_code == 200
    assert sign_in(client, "carol", "x").status_code == 429
    assert sign_in(client, "member", "pw-member").status_code == 429
    assert sign_in(client, "member", "pw-member", address="10.0.0.2").status_code == 302


def test_behind_a_proxy_the_forwarded_address_counts_and_cannot_be_spoofed(
    client, member, settings
):
    settings.TRUSTED_PROXY_COUNT = 1
    settings.LOGIN_FAILURE_LIMIT = 2
    proxy = "172.16.0.2"  # every request comes from the proxy

    def attempt(password, forwarded):
        return sign_in(client, "member", password, address=proxy, HTTP_X_FORWARDED_FOR=forwarded)

    assert attempt("wrong", "203.0.113.7").status_code == 200
    # A client sending its own header: the proxy appends the real address, which counts.
    assert attempt("wrong", "198.51.100.1, 203.0.113.7").status_code == 429
    assert attempt("pw-member", "198.51.100.2, 203.0.113.7").status_code == 429
    assert attempt("pw-member", "203.0.113.8").status_code == 302  # another client


def test_cache_down_fails_open_and_logs(client, member, settings, caplog):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
        }
    }
    settings.LOGIN_FAILURE_LIMIT = 1
    with caplog.at_level(logging.WARNING, logger="apps.accounts.throttling"):
        assert sign_in(client, "member", "wrong").status_code == 200
        assert sign_in(client, "member", "pw-member").status_code == 302
    assert any("cache is unreachable" in r.getMessage() for r in caplog.records)


# --- password reset ---------------------------------------------------------------------------


def test_the_login_page_links_to_the_password_reset(client):
    page = client.get(LOGIN).content.decode()
    assert f'href="{reverse("accounts:password_reset")}"' in page
    assert "Forgot your password?" in page
    assert reverse("accounts:password_reset") == "/accounts/password-reset/"


def test_the_whole_password_reset(client, member):
    member.email = "member@example.com"
    member.save()
    form = client.get("/accounts/password-reset/")
    assert form.status_code == 200 and "Reset your password" in form.content.decode()

    sent = client.post("/accounts/password-reset/", {"email": "member@example.com"})
    assert sent.status_code == 302 and sent["Location"] == "/accounts/password-reset/sent/"
    assert "Check your e-mail" in client.get(sent["Location"]).content.decode()
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["member@example.com"] and "reset your password" in message.subject
    assert "Your username: member" in message.body
    link = re.search(r"http://testserver(/accounts/password-reset/[^/\s]+/[^/\s]+/)", message.body)
    assert link, message.body

    # Django's confirm view moves the token into the session, then shows the form.
    landing = client.get(link.group(1))
    assert landing.status_code == 302
    page = client.get(landing["Location"])
    assert page.status_code == 200 and "Choose a new password" in page.content.decode()
    done = client.post(
        landing["Location"],
        {"new_password1": "a new long passphrase 42", "new_password2": "a new long passphrase 42"},
    )
    assert done.status_code == 302 and done["Location"] == "/accounts/password-reset/done/"
    assert "Password changed" in client.get(done["Location"]).content.decode()

    assert sign_in(client, "member", "pw-member").status_code == 200  # the old one is gone
    assert sign_in(client, "member", "a new long passphrase 42").status_code == 302
    # The link works once.
    client.post(reverse("accounts:logout"))
    used = client.get(link.group(1), follow=True)
    assert "This link does not work" in used.content.decode()


def test_a_reset_for_an_unknown_address_sends_nothing_and_says_the_same(client, member):
    response = client.post("/accounts/password-reset/", {"email": "nobody@example.com"})
    assert response.status_code == 302 and response["Location"].endswith("/sent/")
    assert mail.outbox == []


def test_a_new_password_lifts_the_lock(client, member, settings):
    settings.LOGIN_FAILURE_LIMIT = 1
    member.email = "member@example.com"
    member.save()
    assert sign_in(client, "member", "wrong", address="127.0.0.1").status_code == 429
    client.post("/accounts/password-reset/", {"email": "member@example.com"})
    link = re.search(r"http://testserver(/accounts/password-reset/\S+/)", mail.outbox[0].body)
    landing = client.get(link.group(1))
    client.post(
        landing["Location"],
        {"new_password1": "a new long passphrase 42", "new_password2": "a new long passphrase 42"},
    )
    assert (
        get_user_model().objects.get(username="member").check_password("a new long passphrase 42")
    )
    response = sign_in(client, "member", "a new long passphrase 42", address="127.0.0.1")
    assert response.status_code == 302
