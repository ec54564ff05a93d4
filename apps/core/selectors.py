from __future__ import annotations

from django.db.models import QuerySet

from apps.core.models import Job, JobStatus


def job_active_list(*, model: type[Job]) -> QuerySet[Job]:
    return model.objects.filter(status__in=(JobStatus.PENDING, JobStatus.RUNNING))
