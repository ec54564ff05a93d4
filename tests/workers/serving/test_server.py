import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from tests.conftest import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_search_process_starts_answers_health_and_stops_on_sigterm():
    port = free_port()
    env = {**os.environ, "SEARCH_URL": f"http://127.0.0.1:{port}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.serving"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        body = None
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    body = json.loads(r.read())
                break
            except OSError:
                time.sleep(0.1)
        assert body is not None and body["status"] == "ok" and body["pid"] == proc.pid
        assert body["indexes"] == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_web_reports_search_process_up_and_down(settings, client, owner):
    from django.urls import reverse

    settings.SEARCH_URL = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    client.force_login(owner)
    url = reverse("indexes:search_status")
    down = client.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert "search down" in down

    port = free_port()
    settings.SEARCH_URL = f"http://127.0.0.1:{port}"
    env = {**os.environ, "SEARCH_URL": settings.SEARCH_URL}
    proc = subprocess.Popen([sys.executable, "-m", "workers.serving"], cwd=REPO, env=env)
    try:
        for _ in range(100):
            if "search up" in client.get(url, HTTP_HX_REQUEST="true").content.decode():
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the page never saw the search process up")
        page = client.get(url).content.decode()
        assert f"pid {proc.pid}" in page
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_encoder_batches_waiting_queries_and_answers_after_close():
    """Queries waiting together are encoded in one call, each gets its own rows back, and a
    query that reaches a closed (swapped-out) encoder is still answered."""
    import threading

    import torch

    from workers.serving.server import Encoder

    calls = []
    gate = threading.Event()

    class Model:
        device = "cpu"

        def encode(self, texts, **kwargs):
            calls.append(list(texts))
            gate.wait(5)
            return torch.tensor([[float(len(t))] for t in texts])  # as convert_to_tensor gives

    encoder = Encoder(Model(), normalize=True)
    results = {}

    def ask(text):
        results[text] = encoder.encode([text])[0, 0]

    first = threading.Thread(target=ask, args=("a",))
    first.start()
    while not calls:  # the first query is being encoded; the next ones queue up meanwhile
        time.sleep(0.01)
    others = [threading.Thread(target=ask, args=(t,)) for t in ("bb", "ccc", "dddd")]
    for t in others:
        t.start()
    time.sleep(0.2)
    gate.set()
    for t in [first, *others]:
        t.join(5)
    assert results == {"a": 1.0, "bb": 2.0, "ccc": 3.0, "dddd": 4.0}
    assert calls[0] == ["a"] and sorted(calls[1]) == ["bb", "ccc", "dddd"]  # one batched call
    encoder.close()
    encoder.thread.join(5)
    assert not encoder.thread.is_alive()
    assert encoder.encode(["eeeee"])[0, 0] == 5.0  # answered inline after the thread ended


def test_encode_and_search_runs_the_search_in_the_faiss_pool_even_after_close(tmp_path):
    """The encoder thread hands its vectors to the faiss pool (never the event loop's thread);
    a swapped-out encoder whose thread ended still answers, and an index's error reaches the
    request."""
    import threading

    import pytest
    import torch

    from workers.serving.server import Deployed, Encoder, SearchState

    class Model:
        device = "cpu"

        def encode(self, texts, **kwargs):
            return torch.tensor([[float(len(t))] for t in texts])

    searched_in = []

    class Index:
        def search(self, vectors, k, filters=None):
            searched_in.append(threading.current_thread().name)
            if filters:
                raise ValueError("broken index")
            return vectors[:, :1], [[f"d{int(v[0])}"] for v in vectors]

    state = SearchState(manifest=tmp_path / "deployments.json")
    encoder = Encoder(Model(), normalize=True)
    deployed = Deployed(key="t/x", index_id=1, path="p", encoder_spec={}, index=Index(),
                        encoder=encoder, loaded_at="")  # fmt: skip
    found = state.encode_and_search(deployed, ["ab", "c"], 1, None).result(5)
    scores, ids, encode_s, search_s, adapter_s = found
    assert ids == [["d2"], ["d1"]] and scores.tolist() == [[2.0], [1.0]]
    assert encode_s >= 0 and search_s >= 0 and searched_in == ["faiss_0"]
    assert adapter_s == 0.0  # no adapter: nothing mapped
    encoder.close()
    encoder.thread.join(5)
    assert not encoder.thread.is_alive()
    _, ids, _, _, _ = state.encode_and_search(deployed, ["abc"], 1, None).result(5)
    assert ids == [["d3"]] and searched_in[-1] == "faiss_0"
    with pytest.raises(ValueError, match="broken index"):
        state.encode_and_search(deployed, ["a"], 1, {"lang": "en"}).result(5)
    state.faiss.shutdown()
