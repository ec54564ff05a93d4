"""A waiting job's page says whether any live worker listens to its queue."""

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone

from apps.core.models import WorkerPresence
from apps.core.selectors import queue_listeners
from workers.tasks.presence import presence_remove, presence_write

pytestmark = pytest.mark.django_db(transaction=True)


def test_live_workers_are_counted_per_queue_and_silent_ones_are_not():
    presence_write(hostname="a@h", queues=["gpu", "default"])
    presence_write(hostname="b@h", queues=["default"])
    presence_write(hostname="a@h", queues=["gpu", "default"])  # a refresh, not a second row
    assert queue_listeners() == {"gpu": 1, "default": 2}
    WorkerPresence.objects.filter(hostname="b@h").update(
        seen_at=timezone.now() - dt.timedelta(minutes=5)
    )
    assert queue_listeners() == {"gpu": 1, "default": 1}
    presence_remove(hostname="a@h")
    assert queue_listeners() == {}  # a stopped worker removes its row


def test_the_wait_names_the_queue_and_says_when_no_worker_listens(client, member, evaluation):
    from apps.core.selectors import job_queue

    evaluation.celery_task_name = evaluation.celery_task_name or "workers.tasks.evaluation.evaluate"
    evaluation.save()
    queue = job_queue(evaluation)
    client.force_login(member)
    url = reverse("runs:evaluation", args=[evaluation.pk])
    page = client.get(url).content.decode()
    assert f"in the <code>{queue}</code> queue" in page
    assert 'id="no-listener"' in page and f"worker -Q {queue}" in page
    assert "no worker listens" in client.get(reverse("core:jobs")).content.decode()
    presence_write(hostname="w@h", queues=[queue])
    page = client.get(url).content.decode()
    assert 'id="no-listener"' not in page and "1 worker listens to it" in page
