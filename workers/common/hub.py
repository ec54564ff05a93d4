"""Models and datasets from the Hugging Face Hub (or any server that answers as it does, named by
``HF_ENDPOINT``): names checked, the revision resolved to its commit, files listed, a model's
remote code refused before its weights are fetched, and every file downloaded into a temporary
folder that becomes the destination only once complete. No Django: the worker's task wraps it.

``huggingface_hub`` is imported inside the functions: the web checks names with this module and
must not pay for the HTTP stack.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

# The Hub's own rules, a little stricter: no leading dot or dash, no "..", at most 96 characters
# a part. A repo id never becomes a path: files go under a folder named by the job's id.
_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
REPO_ID = re.compile(rf"^{_PART}/{_PART}$")
REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")

# Files a model needs to be used by sentence-transformers / transformers; weights only in the
# safetensors form when the repo has it (pytorch_model.bin executes pickle on load).
_SKIP_DIRS = ("onnx/", "openvino/", "coreml/", "tf_model", "flax_model", "rust_model", ".git")
_SKIP_SUFFIXES = (".h5", ".msgpack", ".ot", ".onnx", ".tflite", ".mlmodel", ".gguf", ".md5")


def _require_online() -> None:
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise HubError(
            "The workers run offline (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set): start them "
            "without it to reach the Hub (bin/up: EMBEDHUB_ONLINE=1 bin/up)."
        )


class HubError(ValueError):
    """What the user sees: one line, the repo named, never a server path."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.human_message = message


@dataclass
class HubFile:
    path: str
    size: int


@dataclass
class HubSnapshot:
    repo_id: str
    repo_type: str
    revision: str
    sha: str
    folder: Path
    files: list[HubFile] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def hub_name_problem(*, repo_id: str, revision: str = "", allowed_orgs: Iterable[str] = ()) -> str:
    """Why ``repo_id`` (and ``revision``) may not be fetched; empty when they may."""
    if not REPO_ID.match(repo_id or "") or ".." in repo_id:
        return f"{repo_id!r} is not a Hub repo id (ORG/NAME, letters, digits, '.', '_', '-')."
    if revision and (not REVISION.match(revision) or ".." in revision):
        return f"{revision!r} is not a revision (a branch, a tag or a commit sha)."
    allowed = {org.lower() for org in allowed_orgs if org}
    org = repo_id.split("/", 1)[0]
    if allowed and org.lower() not in allowed:
        return (
            f"{repo_id}: {org} is not on this server's list of Hub organisations "
            f"(HUB_ALLOWED_ORGS: {', '.join(sorted(allowed))}); an administrator adds it."
        )
    return ""


def _wanted_model_files(paths: list[str]) -> list[str]:
    has_safetensors = any(p.endswith(".safetensors") for p in paths)
    out = []
    for p in paths:
        if p.startswith(_SKIP_DIRS) or "/." in p or p.startswith(".") or p.endswith(_SKIP_SUFFIXES):
            continue
        if has_safetensors and p.endswith((".bin", ".pt", ".pth", ".ckpt")) and "adapter" not in p:
            continue
        out.append(p)
    return out


def remote_code_reason(folder: Path) -> str:
    """Why loading the model in ``folder`` would run code from its repo; empty if it would not.
    Reads only JSON: config.json's ``auto_map`` and modules.json's module classes."""
    config = folder / "config.json"
    if config.is_file():
        try:
            data = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        if isinstance(data, dict) and data.get("auto_map"):
            return "its config.json maps its classes to Python files in the repo (auto_map)"
    modules = folder / "modules.json"
    if modules.is_file():
        try:
            entries = json.loads(modules.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            entries = []
        for entry in entries if isinstance(entries, list) else []:
            kind = str(entry.get("type", "")) if isinstance(entry, dict) else ""
            if kind and not kind.startswith("sentence_transformers."):
                return f"its modules.json loads the class {kind!r} from the repo"
    return ""


def _raise_for(exc: Exception, *, repo_id: str, revision: str, token: bool) -> None:
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, GatedRepoError):
        hint = (
            "the token given has no access: accept the repo's terms on the Hub with its account"
            if token
            else "set a Hub token of an account that accepted its terms (the team page, or "
            "HF_TOKEN on the workers)"
        )
        raise HubError(f"{repo_id} is gated: {hint}.") from exc
    if isinstance(exc, RevisionNotFoundError):
        raise HubError(f"{repo_id} has no revision {revision!r}.") from exc
    if isinstance(exc, RepositoryNotFoundError):
        raise HubError(
            f"{repo_id} was not found on the Hub, or it is private and "
            + (
                "the token has no access to it."
                if token
                else "no Hub token is set (the team page, or HF_TOKEN on the workers)."
            )
        ) from exc
    if isinstance(exc, RemoteEntryNotFoundError):
        raise HubError(f"{repo_id}: a listed file is missing at {revision}.") from exc
    if isinstance(exc, HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", "?")
        raise HubError(f"The Hub answered {status} for {repo_id}; try again later.") from exc
    raise HubError(f"Could not reach the Hub for {repo_id} ({type(exc).__name__}).") from exc


def hub_snapshot(
    *,
    repo_id: str,
    dest: Path,
    repo_type: str = "model",
    revision: str = "",
    token: str | None = None,
    allow_remote_code: bool = False,
    max_bytes: int = 0,
    progress: Callable[[int, int], None] | None = None,
    check: Callable[[], None] | None = None,
) -> HubSnapshot:
    """Download ``repo_id`` at ``revision`` (its default branch when empty) into ``dest``.

    The revision is resolved to one commit first and every file is fetched at that commit, so a
    push during the download cannot mix two versions. A model's JSON files come first: one
    that needs remote code is refused before its weights are fetched, unless
    ``allow_remote_code``. ``progress(done_bytes, total_bytes)`` after each file; ``check()``
    may raise to stop (a cancel). ``dest`` appears whole or not at all.
    """
    import httpx2
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    problem = hub_name_problem(repo_id=repo_id, revision=revision)
    if problem:
        raise HubError(problem)
    _require_online()
    # Read now, not at import: huggingface_hub fixes its endpoint when first imported.
    endpoint = os.environ.get("HF_ENDPOINT") or None
    api = HfApi(endpoint=endpoint, token=token or None)
    try:
        info = api.repo_info(repo_id=repo_id, repo_type=repo_type, revision=revision or None)
        sha = info.sha
        listing = [
            HubFile(path=f.path, size=int(f.size or 0))
            for f in api.list_repo_tree(repo_id, recursive=True, revision=sha, repo_type=repo_type)
            if getattr(f, "size", None) is not None and hasattr(f, "blob_id")
        ]
    except (HfHubHTTPError, httpx2.HTTPError, OSError) as exc:
        _raise_for(exc, repo_id=repo_id, revision=revision, token=bool(token))
    if not sha:
        raise HubError(f"The Hub gave no commit for {repo_id} at {revision or 'its main branch'}.")
    if repo_type == "model":
        keep = set(_wanted_model_files([f.path for f in listing]))
        listing = [f for f in listing if f.path in keep]
    else:
        listing = [f for f in listing if not f.path.startswith(".") and "/." not in f.path]
    if not listing:
        raise HubError(f"{repo_id} at {revision or 'main'} holds no files EmbedHub can use.")
    for f in listing:
        if f.path.startswith("/") or ".." in Path(f.path).parts:
            raise HubError(f"{repo_id} lists a file outside the repo ({f.path!r}).")
    total = sum(f.size for f in listing)
    if max_bytes and total > max_bytes:
        raise HubError(
            f"{repo_id} holds {total / 2**30:.1f} GiB to download, more than this server takes "
            f"({max_bytes / 2**30:.1f} GiB, HUB_MAX_BYTES)."
        )

    tmp = dest.with_name(f".{dest.name}-partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    snapshot = HubSnapshot(repo_id=repo_id, repo_type=repo_type, revision=revision or "main",
                           sha=sha, folder=dest, files=listing)  # fmt: skip
    # JSON first: the remote-code check needs only those, and refuses before any weight.
    ordered = sorted(listing, key=lambda f: (not f.path.endswith(".json"), f.path))
    done = 0
    try:
        for i, f in enumerate(ordered):
            if check:
                check()
            try:
                hf_hub_download(
                    repo_id, f.path, repo_type=repo_type, revision=sha, local_dir=tmp,
                    token=token or None, endpoint=endpoint,
                )  # fmt: skip
            except (HfHubHTTPError, httpx2.HTTPError, OSError) as exc:
                if isinstance(exc, OSError) and not isinstance(exc, HfHubHTTPError):
                    raise  # a full disk is the worker's, not the Hub's
                _raise_for(exc, repo_id=repo_id, revision=revision, token=bool(token))
            done += f.size
            if progress:
                progress(done, snapshot.total_bytes)
            last_json = i + 1 == len(ordered) or not ordered[i + 1].path.endswith(".json")
            if repo_type == "model" and f.path.endswith(".json") and last_json:
                reason = remote_code_reason(tmp)
                if reason and not allow_remote_code:
                    raise HubError(
                        f"{repo_id} needs trust_remote_code ({reason}): refused; an "
                        "administrator may allow it with HUB_TRUST_REMOTE_CODE."
                    )
        # huggingface_hub keeps its own bookkeeping in .cache; it is not part of the model.
        shutil.rmtree(tmp / ".cache", ignore_errors=True)
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return snapshot


# --- a dataset repo as the upload validator takes it -----------------------------------------

_TEXT = (".jsonl", ".jsonl.gz")


def _parquet_rows(paths: list[Path]) -> Iterable[dict]:
    import pyarrow.parquet as pq

    for path in sorted(paths):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
            yield from batch.to_pylist()


def _one_of(folder: Path, stem: str) -> list[Path]:
    """``stem``.jsonl[.gz] or .parquet at the top, or the parquet shards of a ``stem/`` folder."""
    for suffix in (*_TEXT, ".parquet"):
        if (folder / f"{stem}{suffix}").is_file():
            return [folder / f"{stem}{suffix}"]
    shards = sorted((folder / stem).glob("*.parquet")) if (folder / stem).is_dir() else []
    return shards


def _write_jsonl(rows: Iterable[dict], out: Path, *, keys: tuple[str, ...]) -> None:
    with out.open("w", encoding="utf-8") as fh:
        for row in rows:
            record = {k: row[k] for k in keys if k in row and row[k] is not None}
            if "_id" not in record and "id" in row:  # some parquet exports name it id
                record["_id"] = row["id"]
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")


def _qrels_files(folder: Path) -> dict[str, list[Path]]:
    """split → files: qrels/<split>.tsv or .parquet (BEIR, mteb), or mteb's newer
    default/<split>-NNNNN-of-NNNNN.parquet shards."""
    found: dict[str, list[Path]] = {}
    for path in sorted((folder / "qrels").glob("*")) if (folder / "qrels").is_dir() else []:
        if path.suffix in (".tsv", ".parquet"):
            found.setdefault(path.name.split(".")[0], []).append(path)
    if not found and (folder / "default").is_dir():
        for path in sorted((folder / "default").glob("*.parquet")):
            found.setdefault(path.name.split("-")[0], []).append(path)
    return found


def beir_folder_from_snapshot(folder: Path, out: Path) -> Path | None:
    """A BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) made from a dataset repo
    in BEIR's or mteb's layout, JSONL or parquet; None when the repo is not one. JSONL and TSV
    files are copied as they are, so the validator's line numbers are the repo's; parquet rows
    are written one a line, in file order (line n = row n)."""
    corpus, queries, qrels = (
        _one_of(folder, "corpus"),
        _one_of(folder, "queries"),
        _qrels_files(folder),
    )
    if not corpus or not queries or not qrels:
        return None
    out.mkdir(parents=True, exist_ok=True)
    (out / "qrels").mkdir(exist_ok=True)
    for files, name, keys in (
        (corpus, "corpus", ("_id", "title", "text", "metadata")),
        (queries, "queries", ("_id", "text", "metadata")),
    ):
        if files[0].name.endswith(_TEXT):
            suffix = ".jsonl.gz" if files[0].name.endswith(".gz") else ".jsonl"
            shutil.copyfile(files[0], out / f"{name}{suffix}")
        else:
            _write_jsonl(_parquet_rows(files), out / f"{name}.jsonl", keys=keys)
    for split, files in qrels.items():
        target = out / "qrels" / f"{split}.tsv"
        if files[0].suffix == ".tsv":
            shutil.copyfile(files[0], target)
            continue
        with target.open("w", encoding="utf-8") as fh:
            fh.write("query-id\tcorpus-id\tscore\n")
            for row in _parquet_rows(files):
                fh.write(f"{row.get('query-id')}\t{row.get('corpus-id')}\t{row.get('score')}\n")
    return out


def training_file_from_snapshot(folder: Path, out: Path) -> Path | None:
    """The repo's one training file (JSONL, CSV, or parquet written out as JSONL, whose columns
    the upload path reads as anchor / positive / negatives); None when there is not exactly
    one."""
    candidates = [
        p for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name.endswith((".jsonl", ".jsonl.gz", ".csv", ".parquet"))
        and not p.name.startswith(("corpus", "queries"))
    ]  # fmt: skip
    parquet = [p for p in candidates if p.suffix == ".parquet"]
    if parquet and len(parquet) == len(candidates):
        # Shards of one table (train-00000-of-00002.parquet …) are one file.
        out.parent.mkdir(parents=True, exist_ok=True)
        target = out.with_suffix(".jsonl")
        with target.open("w", encoding="utf-8") as fh:
            for row in _parquet_rows(parquet):
                fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        return target
    if len(candidates) != 1:
        return None
    return candidates[0]


# --- publishing -------------------------------------------------------------------------------


def hub_push(
    *,
    repo_id: str,
    folder: Path,
    card: str,
    private: bool,
    token: str | None,
    message: str,
    may_exist: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[str, bool]:
    """Push ``folder`` (and ``card`` as its README.md) to the model repo ``repo_id`` as one
    commit, creating the repo (``private``); returns the commit sha and whether the repo is
    private. A repo that exists already is refused unless ``may_exist`` (the caller knows it
    made it): a push never lands in someone else's repo. Large files go the Hub's own way
    (LFS / Xet, as ``create_commit`` decides)."""
    import httpx2
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    if problem := hub_name_problem(repo_id=repo_id):
        raise HubError(problem)
    _require_online()
    if not token:
        raise HubError(
            "Publishing needs the team's own Hub token, one that can write: a team admin sets "
            "it on the team page."
        )
    files = [
        p for p in sorted(folder.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and p.name != "README.md"
    ]  # fmt: skip
    operations = [CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card.encode())]
    operations += [
        CommitOperationAdd(path_in_repo=str(p.relative_to(folder)), path_or_fileobj=str(p))
        for p in files
    ]
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)
    try:
        try:
            api.create_repo(repo_id, private=private, exist_ok=False, repo_type="model")
        except HfHubHTTPError as exc:
            if getattr(getattr(exc, "response", None), "status_code", None) != 409:
                raise
            if not may_exist:
                raise HubError(
                    f"{repo_id} exists already and this team did not publish it: choose a new "
                    "repo name."
                ) from exc
        if progress:
            progress(0, len(operations))
        info = api.create_commit(repo_id, operations=operations, commit_message=message,
                                 repo_type="model")  # fmt: skip
        is_private = bool(api.repo_info(repo_id, repo_type="model").private)
    except (HfHubHTTPError, httpx2.HTTPError) as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            raise HubError(
                f"The token cannot write to {repo_id} (the Hub answered {status})."
            ) from exc
        _raise_for(exc, repo_id=repo_id, revision="main", token=True)
    if progress:
        progress(len(operations), len(operations))
    return info.oid, is_private
