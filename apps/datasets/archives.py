"""Unpacking uploaded archives safely (zip, tar, tar.gz).

Refused: paths that escape the target (absolute, ``..``), links and special files, and
decompression bombs — too many bytes in all, or a member that expands far more than data
does. Sizes are counted while writing, never taken from the archive's own headers.
"""

from __future__ import annotations

import shutil
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

CHUNK = 1 << 20
BOMB_FLOOR = 10 * CHUNK  # a small file may compress well; only a big expansion is suspicious
CORPUS_NAMES = ("corpus.jsonl", "corpus.jsonl.gz")


class ArchiveError(ValueError):
    def __init__(self, archive: str | Path, reason: str) -> None:
        super().__init__(f"{Path(archive).name}: {reason}")


def is_archive(name: str) -> bool:
    return name.endswith((".zip", ".tar", ".tar.gz", ".tgz"))


def too_many_bytes(max_bytes: int) -> str:
    return f"expands to more than {max_bytes:,} bytes (a decompression bomb?)"


def too_expanded(max_ratio: float, member: str | None = None) -> str:
    what = f"member {member!r} expands" if member else "expands"
    return f"{what} over {max_ratio:g}× (a decompression bomb?)"


def expands_too_much(written: int, compressed: int, max_ratio: float) -> bool:
    return written > BOMB_FLOOR and written > max_ratio * max(compressed, 1)


def expansion_problem(
    written: int, compressed: int, max_bytes: int, max_ratio: float, *, member: str | None = None
) -> str | None:
    """Why ``written`` bytes out of ``compressed`` are refused (the rules below), or None."""
    if written > max_bytes:
        return too_many_bytes(max_bytes)
    if expands_too_much(written, compressed, max_ratio):
        return too_expanded(max_ratio, member)
    return None


def member_parts(name: str) -> tuple[str, ...]:
    """A member's path as folder names (``./a\\b`` → ``("a", "b")``), as it is extracted."""
    return PurePosixPath(name.replace("\\", "/")).parts


def member_problem(name: str) -> str | None:
    """Why a member's name cannot be extracted (it points outside the archive), or None."""
    parts = member_parts(name)
    if not parts or name.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
        return f"member {name!r} points outside the archive"
    return None


def beir_roots(files) -> list[str]:
    """The folders that hold corpus.jsonl[.gz], from the archive's file names (``a/b.tsv``):
    ``""`` for the top, ``"name/"`` one level down — where ``find_beir_root`` looks."""
    files = set(files)
    tops = sorted({f.split("/", 1)[0] for f in files if "/" in f})
    return [r for r in ["", *(t + "/" for t in tops)] if any(r + n in files for n in CORPUS_NAMES)]


def roots_problem(roots: list[str]) -> str | None:
    """Why an archive holding BEIR folders at ``roots`` (``beir_roots``) is refused, or None."""
    if not roots:
        return "no corpus.jsonl inside the archive"
    if len(roots) > 1:
        where = ", ".join(r or "the top folder" for r in roots)
        return f"two datasets in one archive ({where}); upload one at a time"
    return None


def _safe_target(root: Path, name: str, archive: Path) -> Path:
    if problem := member_problem(name):
        raise ArchiveError(archive, problem)
    target = root.joinpath(*member_parts(name))
    if not target.resolve().is_relative_to(root.resolve()):
        raise ArchiveError(archive, f"member {name!r} points outside the archive")
    return target


class _Budget:
    def __init__(self, archive: Path, max_bytes: int, max_ratio: float) -> None:
        self.archive, self.max_bytes, self.max_ratio = archive, max_bytes, max_ratio
        self.total = 0

    def copy(self, src, dst: Path, *, name: str, compressed: int) -> None:
        written = 0
        dst.parent.mkdir(parents=True, exist_ok=True)
        with open(dst, "wb") as out:
            while chunk := src.read(CHUNK):
                written += len(chunk)
                self.total += len(chunk)
                if self.total > self.max_bytes:
                    raise ArchiveError(self.archive, too_many_bytes(self.max_bytes))
                # A small member may compress well; only a big expansion is suspicious.
                if expands_too_much(written, compressed, self.max_ratio):
                    raise ArchiveError(self.archive, too_expanded(self.max_ratio, name))
                out.write(chunk)


def extract_archive(archive: Path, target: Path, *, max_bytes: int, max_ratio: float) -> Path:
    """Extract ``archive`` into ``target`` (which must be empty or absent); return ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    budget = _Budget(archive, max_bytes, max_ratio)
    try:
        if archive.name.endswith(".zip"):
            _extract_zip(archive, target, budget)
        else:
            _extract_tar(archive, target, budget)
    except ArchiveError:
        shutil.rmtree(target, ignore_errors=True)
        raise
    except (
        zipfile.BadZipFile,
        tarfile.TarError,
        EOFError,
        OSError,
        zlib.error,  # a damaged deflate stream inside a zip
        NotImplementedError,  # an unknown compression method or zip version
        RuntimeError,  # a member flagged as encrypted
        OverflowError,  # a wild length in a tar PAX header
        ValueError,  # e.g. a name that is not valid UTF-8 despite the zip's flag
    ) as exc:
        shutil.rmtree(target, ignore_errors=True)
        raise ArchiveError(archive, f"not a readable archive ({exc})") from exc
    return target


def _extract_zip(archive: Path, target: Path, budget: _Budget) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise ArchiveError(archive, f"member {info.filename!r} is a link")
            dest = _safe_target(target, info.filename, archive)
            if info.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            with zf.open(info) as src:
                budget.copy(src, dest, name=info.filename, compressed=info.compress_size)


def _extract_tar(archive: Path, target: Path, budget: _Budget) -> None:
    compressed_total = archive.stat().st_size
    with tarfile.open(archive, "r:*") as tf:
        for member in tf:
            if member.issym() or member.islnk():
                raise ArchiveError(archive, f"member {member.name!r} is a link")
            if not (member.isfile() or member.isdir()):
                raise ArchiveError(archive, f"member {member.name!r} is not a regular file")
            dest = _safe_target(target, member.name, archive)
            if member.isdir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            src = tf.extractfile(member)
            # tar has no per-member compressed size: hold each member to the whole archive's.
            budget.copy(src, dest, name=member.name, compressed=compressed_total)


def find_beir_root(folder: Path) -> Path | None:
    """The folder holding corpus.jsonl[.gz], at the top or one level down (a zipped folder)."""
    for candidate in (folder, *sorted(p for p in folder.iterdir() if p.is_dir())):
        if any((candidate / n).is_file() for n in CORPUS_NAMES):
            return candidate
    return None


def extracted_files(folder: Path) -> list[str]:
    """The files under an extracted archive, as names relative to it (``a/b.tsv``)."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
