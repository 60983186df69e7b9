"""Fields left running by a worker that is gone: found by age, queued again a bounded number of times, then failed.

A field is claimed by its task (status `segmenting`, `started_at` now) and finished by it. The hard
time limit (`CELERY_TASK_TIME_LIMIT`) stops every task, so a field still running
`CELERY_TASK_TIME_LIMIT + HPAWEB_SWEEP_GRACE_S` seconds after it was claimed has no task left:
its worker was killed (SIGKILL, out of memory, a power cut) and no broker will hand it out again
(the filesystem broker drops what a dead worker held; Redis only after its visibility timeout,
and such a late copy is ignored). The periodic task `cells.tasks.sweep_fields` (Celery beat,
embedded in the worker `make run` starts) and a pool process found dead by its worker both end here.
"""

import datetime

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from cells.models import Field

# Runs of a field (its `attempts`) after which a field whose worker died is failed instead of queued again.
MAX_ATTEMPTS = 3
RUNNING = (Field.Status.SEGMENTING, Field.Status.CLASSIFYING)


def abandoned_after() -> datetime.timedelta:
    """How long after its claim a running field is certainly no task's any more."""
    return datetime.timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + settings.HPAWEB_SWEEP_GRACE_S)


def field_is_abandoned(*, field: Field, now: datetime.datetime | None = None) -> bool:
    if field.status not in RUNNING:
        return False
    return field.started_at is None or field.started_at <= (now or timezone.now()) - abandoned_after()


def fields_abandoned(*, now: datetime.datetime | None = None) -> list[int]:
    cutoff = (now or timezone.now()) - abandoned_after()
    abandoned = Q(started_at__lte=cutoff) | Q(started_at__isnull=True)
    return list(Field.objects.filter(abandoned, status__in=RUNNING).values_list("id", flat=True))


@transaction.atomic
def field_recover(*, field_id: int, cause: str, expect_running: bool = True) -> bool:
    """Queue a field whose run was lost again (True: the caller sends its task on commit), or fail it
    with `cause` once it has had MAX_ATTEMPTS runs. A field finished or gone meanwhile is left alone."""
    field = Field.objects.select_for_update().filter(pk=field_id).first()
    if field is None or (expect_running and field.status not in RUNNING):
        return False
    if field.attempts >= MAX_ATTEMPTS:
        Field.objects.filter(pk=field_id).update(
            status=Field.Status.FAILED,
            error=f"{cause} This happened on each of its {field.attempts} runs, so it was not queued again; "
            "run it again, or ask the administrator to look at the worker's log and memory.",
            finished_at=timezone.now(),
        )
        return False
    Field.objects.filter(pk=field_id).update(status=Field.Status.QUEUED, progress=0.0, error="")
    return True
