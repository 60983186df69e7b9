"""Celery tasks: take primary keys, re-fetch, call a service; safe to run twice."""

import logging

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.db import OperationalError

from cells import services

logger = logging.getLogger(__name__)

MAX_RETRIES = 2


@shared_task(bind=True, acks_late=True, max_retries=MAX_RETRIES)
def process_field(self, field_id: int) -> None:
    try:
        services.field_process(field_id=field_id)
    except SoftTimeLimitExceeded:
        services.field_fail(
            field_id=field_id,
            reason="Processing took longer than the time limit; try a smaller field or ask the administrator to raise CELERY_TASK_SOFT_TIME_LIMIT.",
        )
    except OperationalError as exc:
        # The database was busy or briefly unreachable: try again, then give up clearly.
        if self.request.retries < MAX_RETRIES:
            raise self.retry(exc=exc, countdown=2 ** (self.request.retries + 1))
        services.field_fail(field_id=field_id, reason=f"The database could not be reached to store the result ({exc}); run the field again.")
    except Exception as exc:
        logger.exception("Field %s failed", field_id)
        services.field_fail(field_id=field_id, reason=f"Processing failed unexpectedly: {exc}. The inputs were kept; run the field again or report this message.")
