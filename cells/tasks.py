"""Celery tasks: take primary keys, re-fetch, call a processing service; safe to run twice.

Retry and failure handling live here: whatever goes wrong becomes a reason on the field. What
the task cannot catch itself (its pool process killed, or stopped at the hard time limit) is
handled in the worker's main process (`_on_task_failure`); a field whose whole worker died is
found by `sweep_fields` (`cells.sweeper`).

Time limits are the worker's own settings (`hpaweb.celery.WorkerLimitsTask` sends none).
"""

import errno
import logging

from billiard.exceptions import WorkerLostError
from celery import shared_task, signals
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from django.conf import settings
from django.db import OperationalError, transaction

from cells import processing, sweeper, training
from ml.checkpoints import CheckpointError

logger = logging.getLogger(__name__)

MAX_RETRIES = 2


@shared_task(bind=True, acks_late=True, max_retries=MAX_RETRIES)
def process_field(self, field_id: int) -> None:
    try:
        processing.field_process(field_id=field_id, resume=self.request.retries > 0)
    except processing.FieldGone:
        logger.info("Field %s was deleted while it was processed; nothing was kept", field_id)
    except SoftTimeLimitExceeded:
        processing.field_fail(
            field_id=field_id,
            reason=f"Processing took longer than the time limit of {settings.CELERY_TASK_SOFT_TIME_LIMIT} s; "
            "try a smaller field or ask the administrator to raise CELERY_TASK_SOFT_TIME_LIMIT.",
        )
    except OperationalError as exc:
        # The database was busy or briefly unreachable: try again, then give up clearly.
        if self.request.retries < MAX_RETRIES:
            raise self.retry(exc=exc, countdown=2 ** (self.request.retries + 1)) from exc
        processing.field_fail(
            field_id=field_id,
            reason=f"The database could not be reached to store the result ({exc}); run the field again.",
        )
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        processing.field_fail(
            field_id=field_id,
            reason="The server's disk is full, so the results could not be stored (nothing was kept); "
            "ask the administrator to free space, then run the field again.",
        )
    except CheckpointError as exc:
        # The checkpoint's own message is for the administrator (the log keeps it); the user reads what to do.
        logger.exception("Field %s failed: a model file cannot be used", field_id)
        processing.field_fail(field_id=field_id, reason=_model_unusable_reason(str(exc)))
    except Exception as exc:
        logger.exception("Field %s failed", field_id)
        processing.field_fail(
            field_id=field_id,
            reason=f"Processing failed unexpectedly: {str(exc).rstrip('. ')}. "
            "The inputs were kept; run the field again or report this message.",
        )


def _model_unusable_reason(message: str) -> str:
    """A sentence for the user when a model file the field needs cannot be loaded on this server."""
    if "segmentation" in message:
        return (
            "The segmentation this job chose cannot run on this server: its network weights are missing or "
            "unusable. Upload the field again with the classical segmentation, or ask the administrator to "
            "install the weights (ML_NUCLEI_WEIGHTS and ML_CELL_WEIGHTS)."
        )
    return (
        "The classifier this job chose cannot be loaded on this server: its model file is missing or unusable. "
        "Run the job with another classifier from its page, or ask the administrator to replace the model."
    )


@shared_task
def sweep_fields() -> None:
    """Queue again (or fail) every field left running by a dead worker; Celery beat runs this periodically."""
    for field_id in sweeper.fields_abandoned():
        _recover(field_id, cause="The worker processing this field stopped (it was killed or ran out of memory).")


@signals.task_failure.connect(sender=process_field)
def _on_task_failure(sender=None, task_id=None, exception=None, args=(), **kwargs) -> None:
    """In the worker's main process: what the task could not handle itself."""
    field_id = args[0] if args else kwargs.get("kwargs", {}).get("field_id")
    if isinstance(exception, TimeLimitExceeded):
        # Running it again would only hit the limit again.
        processing.field_fail(
            field_id=field_id,
            reason=f"Processing was stopped at the hard time limit of {settings.CELERY_TASK_TIME_LIMIT} s; "
            "try a smaller field or ask the administrator to raise CELERY_TASK_TIME_LIMIT.",
        )
    elif isinstance(exception, WorkerLostError):
        _recover(field_id, cause="The worker process handling this field died (killed, or out of memory).")


def _recover(field_id: int, *, cause: str) -> None:
    with transaction.atomic():
        if sweeper.field_recover(field_id=field_id, cause=cause):
            transaction.on_commit(lambda: _send_or_fail(field_id))


def _send_or_fail(field_id: int) -> None:
    try:
        process_field.delay(field_id)
    except Exception as exc:
        logger.warning("Field %s could not be queued again: %s", field_id, exc)
        processing.field_fail(
            field_id=field_id,
            reason="The worker processing this field stopped, and the task queue could not be reached to queue it "
            "again; run the field again.",
        )


@shared_task(bind=True, acks_late=True, max_retries=MAX_RETRIES)
def classify_field(self, field_id: int, classifier_id: int) -> None:
    """Run a finished field's cells through another classifier (its earlier predictions are kept)."""
    try:
        processing.field_classify(field_id=field_id, classifier_id=classifier_id)
    except Exception as exc:
        logger.exception("Classifying field %s with model %s failed", field_id, classifier_id)
        processing.field_fail(
            field_id=field_id,
            reason=f"Running the field with another model failed: {exc}. Its earlier results were kept; try again.",
        )


@shared_task(bind=True, acks_late=True)
def train_classifier(self, training_job_id: int) -> None:
    """Train a classifier for a training job (cells.training), on the training queue."""
    try:
        training.training_run(training_job_id=training_job_id)
    except Exception as exc:
        logger.exception("Training job %s failed", training_job_id)
        training.training_job_fail(
            training_job_id=training_job_id,
            reason=f"Training failed unexpectedly: {str(exc).rstrip('. ')}. Start it again, or report this message.",
        )
