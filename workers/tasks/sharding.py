"""A large corpus encoded by every worker on the encode queue at once.

Above ``ENCODE_SHARD_MIN_DOCS`` documents, the job that needs a corpus's vectors (an evaluation,
an index build) splits the encode into shards: the texts in the order a one-worker encode takes
them (longest first), cut at whole ``encode`` chunks, so that every shard encodes exactly the
batches a one-worker encode would, and the merged vectors are the same bytes. Each shard is an
:class:`~apps.core.models.EncodeShard` row and a file of texts under
``ARTIFACTS_ROOT/shards/<run>/``; one ``encode_shard`` message per shard goes to the encode
queue as a Celery group. Any worker that takes a message claims shards by a conditional UPDATE
until none is left, the splitting job included (so one worker alone never waits on itself). The
splitting job sums the shards' progress into its own row, takes back a shard whose worker
stopped beating, retries a failed shard up to ``ENCODE_SHARD_ATTEMPTS`` times, and on cancel or
failure marks the rest cancelled, which the other workers see between chunks.

Imports no ML library at module level: the web imports task modules to enqueue.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celery import group, shared_task
from django.conf import settings
from django.db.models import F, Sum
from django.utils import timezone

from apps.core.models import EncodeShard
from workers.tasks.runtime import JobCancelled, JobLost

if TYPE_CHECKING:
    import numpy as np

    from workers.ml.evaluate import DocumentEncoder, EncoderSpec

log = logging.getLogger(__name__)
Status = EncodeShard.Status


class ShardCancelled(Exception):
    """The run this shard belongs to was cancelled, failed or finished without it."""


class ShardFailed(RuntimeError):
    """A shard failed on every attempt."""


# Not a shard's failure: its run or its job was stopped.
STOPS = (ShardCancelled, JobCancelled, JobLost)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def shard_folder(run: str) -> Path:
    # ``run`` is a uuid4 hex made here, never user input.
    return Path(settings.ARTIFACTS_ROOT) / "shards" / run


def shard_length(batch_size: int) -> int:
    """Texts per shard: ENCODE_SHARD_DOCS rounded up to whole encode chunks."""
    from workers.ml.encode import chunk_length

    chunk = chunk_length(batch_size)
    return max(chunk, -(-settings.ENCODE_SHARD_DOCS // chunk) * chunk)


def document_encoder(*, spec: EncoderSpec, check: Callable[[], None]) -> DocumentEncoder:
    """The document encoder a job hands to ``embed_corpus``: in this process below
    ENCODE_SHARD_MIN_DOCS (0: always), sharded over the encode queue's workers above it.
    ``check`` raises when the job is cancelled."""
    from workers.ml.encode import encode_texts

    def encode(encoder: Any, texts: list[str], batch_size: int, on_progress) -> np.ndarray:
        limit = settings.ENCODE_SHARD_MIN_DOCS
        if not limit or len(texts) < limit:
            return encode_texts(encoder=encoder, texts=texts, normalize=spec.normalize,
                                batch_size=batch_size, on_progress=on_progress,
                                precision=spec.precision)  # fmt: skip
        return encode_sharded(encoder=encoder, spec=spec, texts=texts, batch_size=batch_size,
                              on_progress=on_progress, check=check)  # fmt: skip

    return encode


def encode_sharded(
    *,
    encoder: Any,
    spec: EncoderSpec,
    texts: list[str],
    batch_size: int,
    on_progress: Callable[[int, int], None],
    check: Callable[[], None],
) -> np.ndarray:
    """``texts`` encoded by every worker that takes a shard (this one included), merged in
    order: the vectors ``encode_texts`` gives for the same texts, spec and batch size."""
    import numpy as np

    from workers.common.atomic import atomic_write
    from workers.ml.encode import length_order

    order = length_order(texts)
    step = shard_length(batch_size)
    run = uuid.uuid4().hex
    folder = shard_folder(run)
    folder.mkdir(parents=True)
    rows = []
    try:
        for index, start in enumerate(range(0, len(texts), step)):
            part = [texts[i] for i in order[start : start + step]]
            with atomic_write(folder / f"{index}.json", "w") as fh:
                fh.write(json.dumps(part))
            rows.append(EncodeShard(run=run, index=index, size=len(part), encoder=asdict(spec),
                                    batch_size=batch_size))  # fmt: skip
        EncodeShard.objects.bulk_create(rows)
        log.info("Encoding %d texts in %d shards (run %s)", len(texts), len(rows), run)
        _dispatch(run, len(rows))
        _work(run=run, encoder=encoder, total=len(texts), on_progress=on_progress, check=check)
        out = None
        for index, start in enumerate(range(0, len(texts), step)):
            vectors = np.load(folder / f"{index}.npy")
            if out is None:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            out[order[start : start + len(vectors)]] = vectors
        assert out is not None
        return out
    except BaseException:
        # Cancelled or failed: the other workers stop at their next chunk.
        EncodeShard.objects.filter(run=run, status__in=[Status.PENDING, Status.RUNNING]).update(
            status=Status.CANCELLED
        )
        raise
    finally:
        EncodeShard.objects.filter(run=run).delete()
        shutil.rmtree(folder, ignore_errors=True)


def _dispatch(run: str, count: int) -> None:
    """One message per shard to the encode queue. A broker that cannot be reached only means
    this worker encodes every shard itself."""
    messages = group(encode_shard.si(run, i) for i in range(count))
    try:
        # Messages of a run that ended long ago find no rows and do nothing; they expire anyway.
        messages.apply_async(queue=settings.ENCODE_QUEUE, expires=settings.JOB_STALE_AFTER)
    except Exception as exc:  # noqa: BLE001 (the broker's own errors vary by transport)
        log.warning("Could not send shard messages (%s); encoding every shard here", exc)


def _work(*, run: str, encoder: Any, total: int, on_progress, check) -> None:
    """Claim and encode shards until none is pending; then wait for the others' shards,
    taking back the stale and retrying the failed, until every shard is done."""
    shards = EncodeShard.objects.filter(run=run)

    def summed(done_here: int = 0) -> int:
        return (shards.exclude(status=Status.RUNNING, worker=worker_name())
                .aggregate(n=Sum("done"))["n"] or 0) + done_here  # fmt: skip

    on_progress(0, total)
    while True:
        check()
        shard = shard_claim(run=run)
        if shard is not None:
            try:
                shard_encode(shard=shard, encoder=encoder,
                             on_progress=lambda done: on_progress(summed(done), total),
                             check=check)  # fmt: skip
            except STOPS:
                raise
            except Exception:  # noqa: BLE001 (recorded on the row: retried below)
                log.warning("Shard %s of run %s failed here", shard.index, run, exc_info=True)
            on_progress(summed(), total)
            continue
        states = list(shards.values("index", "status", "attempts", "error", "heartbeat_at"))
        if all(s["status"] == Status.DONE for s in states):
            return
        stale = timezone.now() - timedelta(seconds=settings.ENCODE_SHARD_STALE_S)
        for s in states:
            failed = s["status"] == Status.FAILED
            lost = s["status"] == Status.RUNNING and s["heartbeat_at"] and s["heartbeat_at"] < stale
            if not (failed or lost):
                continue
            if s["attempts"] >= settings.ENCODE_SHARD_ATTEMPTS:
                reason = s["error"].strip().splitlines()[-1] if s["error"] else "its worker stopped"
                raise ShardFailed(
                    f"shard {s['index'] + 1} of {len(states)} failed {s['attempts']} times: "
                    f"{reason}"
                )
            # Back to pending: this worker or another takes it again.
            shards.filter(index=s["index"], status=s["status"]).update(status=Status.PENDING)
        on_progress(summed(), total)
        time.sleep(0.2)


def shard_claim(*, run: str, index: int | None = None) -> EncodeShard | None:
    """pending → running for one shard of ``run`` (the given one, or the first pending)."""
    candidates = EncodeShard.objects.filter(run=run, status=Status.PENDING)
    if index is not None:
        candidates = candidates.filter(index=index)
    for pk in candidates.order_by("index").values_list("pk", flat=True)[:8]:
        claimed = EncodeShard.objects.filter(pk=pk, status=Status.PENDING).update(
            status=Status.RUNNING,
            attempts=F("attempts") + 1,
            worker=worker_name(),
            heartbeat_at=timezone.now(),
            done=0,
            error="",
        )
        if claimed:
            # None if the run ended (and deleted its rows) in between.
            return EncodeShard.objects.filter(pk=pk).first()
    return None


def shard_encode(
    *,
    shard: EncodeShard,
    encoder: Any,
    on_progress: Callable[[int], None] | None = None,
    check: Callable[[], None] | None = None,
) -> None:
    """Encode one claimed shard and write its vectors; a failure is recorded on the row (the
    splitting job retries it), a cancelled run stops here between chunks."""
    import numpy as np

    from workers.common.atomic import atomic_write
    from workers.ml.encode import encode_texts

    folder = shard_folder(shard.run)
    mine = EncodeShard.objects.filter(pk=shard.pk, status=Status.RUNNING, worker=worker_name())

    def chunk_done(done: int, total: int) -> None:
        if not mine.update(done=done, heartbeat_at=timezone.now()):
            raise ShardCancelled(f"shard {shard.index} of run {shard.run}")
        if check is not None:
            check()
        if on_progress is not None:
            on_progress(done)

    try:
        texts = json.loads((folder / f"{shard.index}.json").read_text(encoding="utf-8"))
        spec = shard.encoder
        vectors = encode_texts(encoder=encoder, texts=texts, normalize=spec["normalize"],
                               batch_size=shard.batch_size, on_progress=chunk_done,
                               precision=spec.get("precision", "fp32"))  # fmt: skip
        with atomic_write(folder / f"{shard.index}.npy", "wb") as fh:
            np.save(fh, np.ascontiguousarray(vectors, dtype=np.float32))
    except STOPS:
        raise
    except Exception:
        if not folder.exists():  # the run ended (cancelled, or done without this shard)
            raise ShardCancelled(f"run {shard.run} ended") from None
        mine.update(status=Status.FAILED, error=traceback.format_exc()[-4000:])
        raise
    if not mine.update(status=Status.DONE, done=shard.size, heartbeat_at=timezone.now()):
        raise ShardCancelled(f"shard {shard.index} of run {shard.run}")
    log.info("Encoded shard %d of run %s (%d texts) in %s", shard.index, shard.run, shard.size,
             worker_name())  # fmt: skip


@shared_task(
    name="workers.tasks.sharding.encode_shard",
    soft_time_limit=settings.JOB_SOFT_TIME_LIMIT,
    time_limit=settings.JOB_TIME_LIMIT,
)
def encode_shard(run: str, index: int) -> int:
    """Take shard ``index`` of ``run`` if nobody has, then any other pending shard of the run.
    Returns how many shards this call encoded (0: the others had them all).

    The model is loaded before anything is claimed, so a worker that cannot load it (memory, a
    folder its host lacks) leaves the shards to the others instead of holding one until it is
    taken back; it is freed when the call ends, so a GPU worker's next job has its memory."""
    from workers.ml.encode import free_memory
    from workers.ml.evaluate import EncoderSpec

    pending = EncodeShard.objects.filter(run=run, status=Status.PENDING)
    spec = pending.values_list("encoder", flat=True).first()
    if spec is None:
        return 0  # the run ended, or the others took every shard
    try:
        encoder = EncoderSpec(**spec).load()
    except Exception:  # noqa: BLE001 (another worker, or the splitting job, encodes them)
        log.exception("Could not load the encoder for run %s; leaving its shards", run)
        return 0
    count = 0
    try:
        shard = shard_claim(run=run, index=index) or shard_claim(run=run)
        while shard is not None:
            try:
                shard_encode(shard=shard, encoder=encoder)
            except ShardCancelled:
                return count
            except Exception:  # noqa: BLE001 (recorded on the row; the splitting job retries it)
                log.exception("Shard %s of run %s failed", shard.index, run)
                return count
            count += 1
            shard = shard_claim(run=run)
        return count
    finally:
        device = str(encoder.device)
        del encoder
        free_memory(device)


def shards_sweep(*, older_than_s: int) -> int:
    """Remove the rows and files of runs older than any job may live (their splitting job was
    killed before it could clean up). Returns how many runs went."""
    cutoff = timezone.now() - timedelta(seconds=older_than_s)
    runs = set(EncodeShard.objects.filter(created_at__lt=cutoff).values_list("run", flat=True))
    for run in runs:
        EncodeShard.objects.filter(run=run).delete()
        shutil.rmtree(shard_folder(run), ignore_errors=True)
    return len(runs)
