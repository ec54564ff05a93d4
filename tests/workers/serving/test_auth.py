"""The shared secret between the web and the search process: every route but GET /health needs
it, a 401 leaves a kept-alive connection in step, and with no configuration both sides agree
through the token file under VAR_DIR."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import REPO
from workers.serving.auth import authorized, bearer, resolve_token, shared_token, token_path

TOKEN = "t0k3n-" + "x" * 40


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(env_extra: dict, tmp_path, *args: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEARCH_")}
    env.update(
        SEARCH_URL=f"http://127.0.0.1:{port}",
        SEARCH_MANIFEST=str(tmp_path / "deployments.json"),
        **env_extra,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.serving", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, port
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(proc.stdout.read().decode()) from None
            time.sleep(0.05)
    proc.kill()
    raise AssertionError("the search process never listened")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    proc.stdout.close()


def call(conn, method, path, body=None, headers=None) -> tuple[int, dict, http.client.HTTPResponse]:
    payload = json.dumps(body).encode() if body is not None else None
    conn.request(
        method, path, body=payload, headers={"Content-Type": "application/json", **(headers or {})}
    )
    response = conn.getresponse()
    return response.status, json.loads(response.read() or b"{}"), response


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """One search process with an explicit SEARCH_TOKEN."""
    tmp = tmp_path_factory.mktemp("guarded")
    proc, port = start({"SEARCH_TOKEN": TOKEN, "VAR_DIR": str(tmp / "var")}, tmp)
    yield port
    stop(proc)
    assert not (tmp / "var" / "search_token").exists()  # an explicit token makes no file


WRONG = [
    {},
    {"Authorization": "Bearer wrong"},
    {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": TOKEN},
    {"Authorization": "Bearer "},
]


@pytest.mark.parametrize("headers", WRONG, ids=lambda h: h.get("Authorization", "none")[:12])
@pytest.mark.parametrize(
    "method,path",
    [("POST", "/search"), ("POST", "/reload"), ("POST", "/elsewhere"), ("GET", "/elsewhere")],
)
def test_every_route_but_health_needs_the_token(guarded, method, path, headers):
    conn = http.client.HTTPConnection("127.0.0.1", guarded, timeout=5)
    body = {"deployment": "x", "queries": ["a"], "wait": True} if method == "POST" else None
    status, data, response = call(conn, method, path, body, headers)
    assert status == 401 and "token" in data["error"]
    assert response.getheader("Content-Type") == "application/json"
    assert response.getheader("WWW-Authenticate", "").startswith("Bearer")
    conn.close()


def test_right_token_works_and_health_needs_none(guarded):
    conn = http.client.HTTPConnection("127.0.0.1", guarded, timeout=10)
    status, data, _ = call(conn, "POST", "/reload", {"wait": True}, bearer(TOKEN))
    assert status == 200 and data == {"deployments": {}, "errors": {}}
    status, data, _ = call(
        conn, "POST", "/search", {"deployment": "x", "queries": ["a"]}, bearer(TOKEN)
    )
    assert status == 404 and "not served here" in data["error"]  # past the door, nothing deployed
    status, data, _ = call(conn, "GET", "/elsewhere", headers=bearer(TOKEN))
    assert status == 404
    status, full, _ = call(conn, "GET", "/health", headers=bearer(TOKEN))
    assert status == 200 and full["deployments"] == {} and "manifest" in full
    # Without a token /health still says the process is up, but no more; a wrong one is a 401.
    status, data, _ = call(conn, "GET", "/health")
    assert status == 200 and data["status"] == "ok" and data["indexes"] == 0
    assert not {"deployments", "errors", "manifest"} & set(data)
    assert call(conn, "GET", "/health", headers={"Authorization": "Bearer wrong"})[0] == 401
    conn.close()


def test_a_401_on_a_post_with_a_body_keeps_the_connection_in_step(guarded):
    conn = http.client.HTTPConnection("127.0.0.1", guarded, timeout=5)
    status, _, _ = call(conn, "GET", "/health")
    sock = conn.sock
    big = {"deployment": "x", "queries": ["word " * 2000] * 20}  # ~200 kB, several TCP segments
    status, _, response = call(conn, "POST", "/search", big)
    assert status == 401 and not response.will_close
    status, data, _ = call(conn, "POST", "/reload", {"wait": True}, bearer(TOKEN))
    assert status == 200 and data["errors"] == {}
    assert conn.sock is sock  # the same TCP connection carried all three
    conn.close()

    # Pipelined on a raw socket: had the server left the 401's body unread, it would parse that
    # body as the next request line and answer 400 (or hang) instead of the health below.
    body = json.dumps({"deployment": "x", "queries": ["q"]}).encode()
    requests = (
        b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
        + b"GET /health HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Bearer {TOKEN}\r\n\r\n".encode()
    )
    with socket.create_connection(("127.0.0.1", guarded), timeout=5) as raw:
        raw.sendall(requests)
        reader = raw.makefile("rb")

        def response() -> tuple[int, dict]:
            status = int(reader.readline().split()[1])
            headers = {}
            while (line := reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            return status, json.loads(reader.read(int(headers["content-length"])))

        assert response()[0] == 401
        status, data = response()
        assert status == 200 and "deployments" in data


def test_a_chunked_body_is_refused_and_the_connection_closed(guarded):
    with socket.create_connection(("127.0.0.1", guarded), timeout=5) as raw:
        raw.sendall(
            b"POST /search HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            + f"Authorization: Bearer {TOKEN}\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n".encode()
        )
        answer = b""
        while chunk := raw.recv(65536):  # the server closes: recv ends
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 411") and b"Connection: close" in answer


def test_without_configuration_both_sides_share_a_0600_token_file(tmp_path, settings):
    """The embedded default: no SEARCH_TOKEN anywhere. The search process makes
    VAR_DIR/search_token, the web's client reads it and gets through."""
    from apps.indexes.selectors import _tokens, search_health

    var = tmp_path / "var"
    proc, port = start({"VAR_DIR": str(var)}, tmp_path)
    try:
        path = var / "search_token"
        assert path.exists()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert len(path.read_text().strip()) >= 32
        settings.SEARCH_URL = f"http://127.0.0.1:{port}"
        settings.SEARCH_TOKEN = ""
        settings.VAR_DIR = var
        _tokens.clear()
        health = search_health()
        assert health["up"] and health["deployments"] == {}  # the full health: token accepted
        # A web with another VAR_DIR has another token: refused, and it says why.
        settings.VAR_DIR = tmp_path / "elsewhere"
        health = search_health()
        assert not health["up"] and "SEARCH_TOKEN" in health["error"]
        assert stat.S_IMODE((tmp_path / "elsewhere" / "search_token").stat().st_mode) == 0o600
    finally:
        stop(proc)
        _tokens.clear()


def test_the_web_client_sends_settings_search_token(tmp_path, settings, team, tiny_registered_model,
                                                   tiny_version):  # fmt: skip
    from apps.indexes.models import Deployment, IndexBuild
    from apps.indexes.selectors import SearchFailed, deployment_query, search_call, search_health

    proc, port = start({"SEARCH_TOKEN": TOKEN, "VAR_DIR": str(tmp_path / "var")}, tmp_path)
    try:
        settings.SEARCH_URL = f"http://127.0.0.1:{port}"
        settings.SEARCH_TOKEN = TOKEN
        assert search_health()["up"] and search_health()["deployments"] == {}
        assert search_call("POST", "/reload", {"wait": True}) == {"deployments": {}, "errors": {}}
        status, data = search_call("POST", "/search", {"deployment": "x", "queries": ["a"]})
        assert status == 404
        settings.SEARCH_TOKEN = "not-" + TOKEN
        health = search_health()
        assert not health["up"] and "refused this web's token" in health["error"]
        build = IndexBuild.objects.create(team=team, model=tiny_registered_model,
                                         dataset_version=tiny_version)  # fmt: skip
        deployment = Deployment.objects.create(team=team, name="prod", index=build)
        with pytest.raises(SearchFailed) as failed:
            deployment_query(team=deployment.team, name=deployment.name, queries=["a"])
        assert failed.value.status == 503  # the API user's own token is not at fault: no 401
    finally:
        stop(proc)


def test_token_file_and_flag(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text(TOKEN + "\n")
    proc, port = start({"SEARCH_TOKEN_FILE": str(secret), "SEARCH_TOKEN": "ignored"}, tmp_path)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        assert call(conn, "POST", "/reload", {}, bearer(TOKEN))[0] == 202
        assert call(conn, "POST", "/reload", {}, bearer("ignored"))[0] == 401
        conn.close()
    finally:
        stop(proc)
    other = tmp_path / "other"
    other.write_text("from-the-flag-" + "y" * 20)
    proc, port = start({"SEARCH_TOKEN": TOKEN}, tmp_path, "--token-file", str(other))
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        assert call(conn, "POST", "/reload", {}, bearer(other.read_text()))[0] == 202
        assert call(conn, "POST", "/reload", {}, bearer(TOKEN))[0] == 401
        conn.close()
    finally:
        stop(proc)


@pytest.mark.parametrize("content", [None, ""])
def test_no_usable_token_file_means_no_search_process(tmp_path, content):
    secret = tmp_path / "secret"
    if content is not None:
        secret.write_text(content)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEARCH_")}
    env.update(SEARCH_TOKEN_FILE=str(secret), SEARCH_URL=f"http://127.0.0.1:{free_port()}")
    out = subprocess.run(
        [sys.executable, "-m", "workers.serving"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0 and "no usable token" in out.stderr


def test_shared_token_is_made_once_under_a_race(tmp_path):
    path = token_path(tmp_path / "var")
    results = []
    barrier = threading.Barrier(8)

    def take():
        barrier.wait()
        results.append(shared_token(path))

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(results) == 8 and len(set(results)) == 1
    assert path.read_text().strip() == results[0]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["search_token"]  # no temp files left
    assert resolve_token({"VAR_DIR": str(tmp_path / "var")}) == (
        results[0],
        f"the shared file {path}",
    )


def test_authorized_compares_the_bearer_token():
    assert authorized(f"Bearer {TOKEN}", TOKEN)
    assert authorized(f"bearer  {TOKEN} ", TOKEN)
    for header in (None, "", "Bearer", f"Bearer {TOKEN[:-1]}", f"Token {TOKEN}", TOKEN):
        assert not authorized(header, TOKEN)
    assert not authorized("Bearer ", "")  # never open when a token is missing


def test_the_search_process_listens_on_loopback_unless_told(monkeypatch):
    from workers.serving.server import bind_address

    monkeypatch.delenv("SEARCH_BIND", raising=False)
    monkeypatch.setenv(
        "SEARCH_URL", "http://search:8001"
    )  # another host in the URL: still loopback
    assert bind_address() == ("127.0.0.1", 8001)
    monkeypatch.setenv("SEARCH_URL", "http://127.0.0.1:8123")
    assert bind_address() == ("127.0.0.1", 8123)
    monkeypatch.setenv("SEARCH_BIND", ":9000")
    assert bind_address() == ("127.0.0.1", 9000)
    monkeypatch.setenv("SEARCH_BIND", "0.0.0.0:8001")
    assert bind_address() == ("0.0.0.0", 8001)
    assert bind_address("127.0.0.2:7000") == ("127.0.0.2", 7000)  # --bind wins
