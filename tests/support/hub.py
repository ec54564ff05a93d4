"""A small server on 127.0.0.1 that answers as the Hugging Face Hub does, for the parts
``huggingface_hub`` uses to read a repo: repo info at a revision, the file tree, and files by
``resolve/<revision>/<path>`` (HEAD and GET, with the commit and ETag headers), gated and
private repos (401 with the Hub's ``X-Error-Code``) unless the request carries a known token;
and to write one: ``repos/create``, ``preupload`` (every file "regular", so its content comes
inline) and ``commit`` (the NDJSON payload ``create_commit`` sends), for known tokens only.
Tests point ``HF_ENDPOINT`` at it; nothing leaves the machine."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse


@dataclass
class Repo:
    repo_type: str  # "model" or "dataset"
    repo_id: str
    # revision name (branch or tag) → commit sha; commit sha → {path: bytes}
    refs: dict[str, str] = field(default_factory=dict)
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    gated: bool = False
    private: bool = False


class LocalHub:
    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], Repo] = {}
        self.tokens: set[str] = set()
        self.requests: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> LocalHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add(
        self, repo_type: str, repo_id: str, files: dict[str, bytes], *, revision: str = "main",
        gated: bool = False, private: bool = False,
    ) -> str:  # fmt: skip
        """A commit of ``files`` on ``revision`` of the repo (made if new); returns its sha."""
        repo = self.repos.setdefault((repo_type, repo_id), Repo(repo_type, repo_id))
        repo.gated, repo.private = repo.gated or gated, repo.private or private
        digest = hashlib.sha1(repr(sorted(files.items())).encode() + revision.encode())
        sha = digest.hexdigest()
        repo.commits[sha] = dict(files)
        repo.refs[revision] = sha
        return sha

    def add_folder(self, repo_type: str, repo_id: str, folder: Path, **kwargs) -> str:
        files = {
            str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and ".cache" not in p.parts
        }  # fmt: skip
        return self.add(repo_type, repo_id, files, **kwargs)

    # --- HTTP ------------------------------------------------------------------------------

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                hub.requests.append(f"HEAD {self.path}")
                self._answer(head=True)

            def do_GET(self):
                hub.requests.append(f"GET {self.path}")
                self._answer(head=False)

            def do_POST(self):
                hub.requests.append(f"POST {self.path}")
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                token = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
                if token not in hub.tokens:
                    self._json(401, {"error": "Invalid credentials in Authorization header"})
                    return
                path = urlparse(self.path).path
                if path == "/api/validate-yaml":  # the model card's front matter: accepted
                    self._json(200, {"errors": [], "warnings": []})
                    return
                if path == "/api/repos/create":
                    data = json.loads(body or b"{}")
                    org = data.get("organization") or "me"
                    repo_id = f"{org}/{data['name']}" if "/" not in data["name"] else data["name"]
                    kind = data.get("type") or "model"
                    if (kind, repo_id) in hub.repos:
                        self._json(409, {"error": "You already created this repo"})
                        return
                    private = bool(data.get("private")) or data.get("visibility") == "private"
                    hub.repos[(kind, repo_id)] = Repo(kind, repo_id, private=private)
                    self._json(200, {"url": f"{hub.url}/{repo_id}", "name": repo_id})
                    return
                match = re.match(
                    r"^/api/(models|datasets)/([^/]+/[^/]+)/(preupload|commit)/([^/]+)$", path
                )
                repo = match and hub.repos.get((match.group(1)[:-1], match.group(2)))
                if not match or repo is None:
                    self._error(404, "RepoNotFound", head=False)
                    return
                if match.group(3) == "preupload":
                    files = json.loads(body)["files"]
                    self._json(200, {"files": [
                        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                        for f in files
                    ]})  # fmt: skip
                    return
                revision = unquote(match.group(4))
                files = dict(repo.commits.get(repo.refs.get(revision, ""), {}))
                for line in body.splitlines():
                    item = json.loads(line)
                    if item["key"] == "file":
                        files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                    elif item["key"] == "deletedFile":
                        files.pop(item["value"]["path"], None)
                sha = hub.add(repo.repo_type, repo.repo_id, files, revision=revision)
                self._json(200, {"commitUrl": f"{hub.url}/{repo.repo_id}/commit/{sha}",
                                 "commitOid": sha, "pullRequestUrl": None})  # fmt: skip

            def _json(self, status: int, body, headers: dict | None = None):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, code: str, head: bool):
                headers = {"X-Error-Code": code, "X-Error-Message": code}
                if head:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    self._json(status, {"error": code}, headers)

            def _repo(self, repo_type: str, repo_id: str, head: bool) -> Repo | None:
                repo = hub.repos.get((repo_type, repo_id))
                auth = self.headers.get("Authorization", "")
                token = auth.removeprefix("Bearer ").strip()
                if repo is None or (repo.private and token not in hub.tokens):
                    self._error(401 if repo else 404, "RepoNotFound", head)
                    return None
                if repo.gated and token not in hub.tokens:
                    self._error(401, "GatedRepo", head)
                    return None
                return repo

            def _commit(self, repo: Repo, revision: str, head: bool) -> str | None:
                revision = unquote(revision)
                sha = repo.refs.get(revision) or (revision if revision in repo.commits else None)
                if sha is None:
                    self._error(404, "RevisionNotFound", head)
                return sha

            def _answer(self, head: bool):
                path = urlparse(self.path).path
                api = re.match(
                    r"^/api/(models|datasets)/([^/]+/[^/]+)(?:/(revision|tree)/([^/]+)(/.*)?)?$",
                    path,
                )
                if api:
                    kind, repo_id, what, revision, _ = api.groups()
                    repo = self._repo(kind[:-1], repo_id, head)
                    if repo is None:
                        return
                    sha = self._commit(repo, revision or "main", head)
                    if sha is None:
                        return
                    files = repo.commits[sha]
                    if what == "tree":
                        self._json(200, [
                            {"type": "file", "path": p, "size": len(b),
                             "oid": hashlib.sha1(b).hexdigest()}
                            for p, b in sorted(files.items())
                        ])  # fmt: skip
                        return
                    self._json(200, {
                        "id": repo_id, "sha": sha, "private": repo.private,
                        "gated": "auto" if repo.gated else False, "downloads": 0, "likes": 0,
                        "tags": [], "siblings": [{"rfilename": p} for p in sorted(files)],
                    })  # fmt: skip
                    return
                resolve = re.match(r"^/(datasets/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
                if resolve:
                    is_dataset, repo_id, revision, file_path = resolve.groups()
                    repo = self._repo("dataset" if is_dataset else "model", repo_id, head)
                    if repo is None:
                        return
                    sha = self._commit(repo, revision, head)
                    if sha is None:
                        return
                    data = repo.commits[sha].get(unquote(file_path))
                    if data is None:
                        self._error(404, "EntryNotFound", head)
                        return
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.send_header("X-Repo-Commit", sha)
                    self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
                    self.send_header("Content-Type", "application/octet-stream")
                    self.end_headers()
                    if not head:
                        self.wfile.write(data)
                    return
                self._error(404, "RepoNotFound", head)

        return Handler
