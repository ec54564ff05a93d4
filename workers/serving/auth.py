"""The shared secret between the web and the search process (stdlib only, no Django).

Every route of the search process but ``GET /health`` asks for ``Authorization: Bearer
<token>``. The token is, in order: the contents of ``SEARCH_TOKEN_FILE``, ``SEARCH_TOKEN``,
else (zero configuration: the embedded default, ``bin/up``, the tests) the file
``VAR_DIR/search_token``, which whichever side needs it first creates with mode 0600 and the
other reads. Both sides run this same code on the same ``VAR_DIR``, so they agree; a deployment
that spans hosts without a shared ``VAR_DIR`` sets ``SEARCH_TOKEN`` on both. There is never a
search process without a token.
"""

from __future__ import annotations

import hmac
import os
import secrets
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

TOKEN_FILE_NAME = "search_token"
MIN_LENGTH = 16  # shorter is accepted, with a warning from the search process


class TokenError(RuntimeError):
    """The configured token cannot be used (an unreadable or empty SEARCH_TOKEN_FILE)."""


def default_var_dir() -> Path:
    """VAR_DIR as the settings default it: the repository's var/."""
    return Path(__file__).resolve().parents[2] / "var"


def token_path(var_dir: str | os.PathLike | None = None) -> Path:
    return Path(var_dir or default_var_dir()) / TOKEN_FILE_NAME


def read_token_file(path: str | os.PathLike) -> str:
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise TokenError(f"cannot read the search token file {path}: {exc}") from exc
    if not token:
        raise TokenError(f"the search token file {path} is empty")
    return token


def shared_token(path: Path) -> str:
    """The token in ``path``, created (random, mode 0600) when missing. Two processes starting
    together agree: the file appears whole under its name (a hard link of a finished file),
    and the loser of the race reads the winner's."""
    try:
        return _read_whole(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".search_token-", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(secrets.token_urlsafe(32) + "\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process was first: its token is the one
        except OSError:  # a filesystem without hard links: exclusive create, then write
            _create_exclusive(path, Path(tmp).read_text(encoding="utf-8"))
    finally:
        os.unlink(tmp)
    return _read_whole(path)


def _create_exclusive(path: Path, text: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)


def _read_whole(path: Path, wait: float = 2.0) -> str:
    """Read the token; an empty file is one being written (the exclusive-create fallback)."""
    deadline = time.monotonic() + wait
    while True:
        token = path.read_text(encoding="utf-8").strip()
        if token or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    if not token:
        raise TokenError(f"the search token file {path} is empty: delete it to make a new one")
    return token


def resolve_token(
    environ: Mapping[str, str] | None = None, *, token_file: str | None = None
) -> tuple[str, str]:
    """The search process's token and where it came from (for the log, never the token):
    ``token_file`` (the --token-file flag), SEARCH_TOKEN_FILE, SEARCH_TOKEN, else the shared
    file under VAR_DIR."""
    environ = os.environ if environ is None else environ
    path = token_file or environ.get("SEARCH_TOKEN_FILE", "")
    if path:
        return read_token_file(path), f"the file {path}"
    token = environ.get("SEARCH_TOKEN", "").strip()
    if token:
        return token, "SEARCH_TOKEN"
    shared = token_path(environ.get("VAR_DIR") or None)
    return shared_token(shared), f"the shared file {shared}"


def bearer(token: str) -> dict[str, str]:
    """The header a client sends."""
    return {"Authorization": f"Bearer {token}"}


def authorized(header: str | None, token: str) -> bool:
    """Whether an Authorization header carries ``token``, compared in constant time."""
    if not token or not header:
        return False
    scheme, _, given = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())
