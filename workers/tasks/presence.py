"""Each worker says it is up, and which queues it consumes, in a ``WorkerPresence`` row that a
side thread refreshes; the row goes when the worker stops. The web reads these rows to tell a
user whose job waits whether any worker listens to its queue (a Celery broadcast would make
the page wait on every worker's answer)."""

from __future__ import annotations

import logging
import threading

from celery.signals import worker_ready, worker_shutdown

logger = logging.getLogger(__name__)

EVERY_S = 15.0
_stop = threading.Event()


def presence_write(*, hostname: str, queues: list[str]) -> None:
    from django.db import close_old_connections, connection
    from django.utils import timezone

    from apps.core.models import WorkerPresence

    close_old_connections()
    try:
        WorkerPresence.objects.update_or_create(
            hostname=hostname, defaults={"queues": sorted(queues), "seen_at": timezone.now()}
        )
    finally:
        connection.close()  # this thread's own connection: never left open between beats


def presence_remove(*, hostname: str) -> None:
    from django.db import connection

    from apps.core.models import WorkerPresence

    try:
        WorkerPresence.objects.filter(hostname=hostname).delete()
    finally:
        connection.close()


def _beat(hostname: str, queues: list[str]) -> None:
    while not _stop.is_set():
        try:
            presence_write(hostname=hostname, queues=queues)
        except Exception:  # a database away for a moment must not end the beat
            logger.warning("Could not record this worker's presence", exc_info=True)
        _stop.wait(EVERY_S)


@worker_ready.connect
def _on_ready(sender=None, **kwargs) -> None:
    hostname = getattr(sender, "hostname", None)
    if not hostname:
        return
    queues = list(sender.app.amqp.queues.consume_from or sender.app.amqp.queues)
    _stop.clear()
    threading.Thread(
        target=_beat, args=(hostname, queues), name="worker-presence", daemon=True
    ).start()


@worker_shutdown.connect
def _on_shutdown(sender=None, **kwargs) -> None:
    _stop.set()
    hostname = getattr(sender, "hostname", None)
    if hostname:
        try:
            presence_remove(hostname=hostname)
        except Exception:
            logger.warning("Could not remove this worker's presence", exc_info=True)
