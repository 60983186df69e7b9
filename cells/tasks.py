"""Celery tasks: take primary keys, re-fetch, call a processing service; safe to run twice.

Retry and failure handling live here: whatever goes wrong becomes a reason on the field.
"""

import logging

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.db import OperationalError

from cells import processing

logger = logging.getLogger(__name__)

MAX_RETRIES = 2


@shared_task(bind=True, acks_late=True, max_retries=MAX_RETRIES)
def process_field(self, field_id: int) -> None:
    try:
        processing.field_process(field_id=field_id)
    except SoftTimeLimitExceeded:
        processing.field_fail(
            field_id=field_id,
            reason="Processing took longer than the time limit; try a smaller field or ask the administrator to raise CELERY_TASK_SOFT_TIME_LIMIT.",
        )
    except OperationalError as exc:
        # The database was busy or briefly unreachable: try again, then give up clearly.
        if self.request.retries < MAX_RETRIES:
            raise self.retry(exc=exc, countdown=2 ** (self.request.retries + 1)) from exc
        processing.field_fail(
            field_id=field_id,
            reason=f"The database could not be reached to store the result ({exc}); run the field again.",
        )
    except Exception as exc:
        logger.exception("Field %s failed", field_id)
        processing.field_fail(
            field_id=field_id,
            reason=f"Processing failed unexpectedly: {exc}. The inputs were kept; run the field again or report this message.",
        )
