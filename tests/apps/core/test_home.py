"""The home page is a starting point: the first steps, ticked as the team takes them, and what
is waiting or running."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def test_getting_started_and_running_jobs(client, member, team, tiny_registered_model,
                                          tiny_version, evaluation):  # fmt: skip
    from apps.runs.models import Evaluation

    Evaluation.objects.filter(pk=evaluation.pk).update(
        celery_task_name="workers.tasks.evaluation.evaluate"
    )
    client.force_login(member)
    page = client.get("/").content.decode()
    start = page.index('id="getting-started"')
    steps = page[start : page.index("</section>", start)]
    assert steps.count('class="done"') == 2  # a dataset and a model; nothing evaluated yet
    assert 'id="running-jobs"' in page and f"Evaluation #{evaluation.pk}" in page
    assert "member of the team" in page


def test_a_polled_job_page_marks_the_end_for_the_notice(client, member, evaluation):
    from apps.runs.models import Evaluation

    client.force_login(member)
    url = f"/runs/evaluations/{evaluation.pk}/"
    poll = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "evaluation-status"}
    assert "data-job-ended" not in client.get(url, **poll).content.decode()
    Evaluation.objects.filter(pk=evaluation.pk).update(status="succeeded")
    polled = client.get(url, **poll).content.decode()
    assert f'data-job-ended="#{evaluation.pk} succeeded"' in polled
    assert "data-job-ended" not in client.get(url).content.decode()  # a plain visit: no notice
    assert "js/notify.js" in client.get(url).content.decode()
