"""Secrets kept in the database (a team's Hub token) are Fernet-encrypted with one server key:
``SECRETS_KEY`` when set, else one derived from ``SECRET_KEY``. Changing that key makes what
was stored unreadable; the reader then says to set the secret again."""

from __future__ import annotations

import base64
import hashlib

from django.conf import settings


class SecretUnreadable(ValueError):
    pass


def _fernet():
    from cryptography.fernet import Fernet

    raw = settings.SECRETS_KEY or settings.SECRET_KEY
    # A Fernet key is 32 url-safe base64 bytes; any setting string is stretched to one.
    key = base64.urlsafe_b64encode(hashlib.sha256(b"embedhub-secrets\0" + raw.encode()).digest())
    return Fernet(key)


def secret_encrypt(plain: str) -> str:
    return _fernet().encrypt(plain.encode()).decode()


def secret_decrypt(stored: str) -> str:
    from cryptography.fernet import InvalidToken

    try:
        return _fernet().decrypt(stored.encode()).decode()
    except (InvalidToken, ValueError) as exc:
        raise SecretUnreadable("it was stored under another server key") from exc
