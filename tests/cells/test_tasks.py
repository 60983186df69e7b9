"""The worker task: a failure becomes a reason on the field, the inputs stay, and the field runs again."""

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.db import OperationalError

from cells import intake, processing, tasks
from cells.models import Field
from cells.uploads import FieldUpload

pytestmark = pytest.mark.django_db


@pytest.fixture
def queued_field(owner, channel_uploads, ml_settings):
    ml_settings.ML_MODEL_PATH = ""
    job = intake.job_create(owner=owner, uploads=[FieldUpload(name="f1", channel_files=channel_uploads(size_px=256))])
    return job.fields.get()


def _inputs(field: Field) -> dict[str, bytes]:
    contents = {}
    for channel, stored in field.channel_files().items():
        with stored.open("rb") as handle:
            contents[channel] = handle.read()
    return contents


def _raise(error: BaseException):
    def analyse_field(*args, **kwargs):
        raise error

    return analyse_field


def test_a_field_failing_in_the_worker_keeps_its_inputs_and_runs_again_to_done(
    queued_field, monkeypatch, django_capture_on_commit_callbacks
):
    inputs = _inputs(queued_field)
    assert sorted(inputs) == ["blue", "green", "red", "yellow"]
    monkeypatch.setattr(processing, "analyse_field", _raise(RuntimeError("out of memory")))
    tasks.process_field.apply(args=[queued_field.pk])
    field = Field.objects.get(pk=queued_field.pk)
    assert (field.status, field.attempts, field.cells.count()) == ("failed", 1, 0)
    assert (
        field.error
        == "Processing failed unexpectedly: out of memory. The inputs were kept; run the field again or report this message."
    )
    assert _inputs(field) == inputs

    monkeypatch.undo()
    monkeypatch.setattr(tasks.process_field, "delay", lambda field_id: tasks.process_field.apply(args=[field_id]))
    with django_capture_on_commit_callbacks(execute=True):
        intake.field_retry(field=field)
    field.refresh_from_db()
    assert (field.status, field.error, field.attempts, field.progress) == ("done", "", 2, 1.0)
    assert field.cells.count() == 4 and field.cell_labels and field.images.count() == 7
    assert _inputs(field) == inputs


def test_a_field_over_the_time_limit_fails_with_a_reason_that_says_what_to_do(queued_field, monkeypatch):
    monkeypatch.setattr(processing, "analyse_field", _raise(SoftTimeLimitExceeded()))
    tasks.process_field.apply(args=[queued_field.pk])
    field = Field.objects.get(pk=queued_field.pk)
    assert field.status == "failed" and field.error.startswith(
        "Processing took longer than the time limit of 600 s; try a smaller field"
    )
    assert field.finished_at is not None


def test_a_database_outage_is_retried_twice_then_fails_the_field_with_what_to_do(queued_field, monkeypatch):
    calls = []

    def unreachable(*args, **kwargs):
        calls.append(1)
        raise OperationalError("server closed the connection")

    monkeypatch.setattr(processing, "analyse_field", unreachable)
    tasks.process_field.apply(args=[queued_field.pk])
    field = Field.objects.get(pk=queued_field.pk)
    assert (len(calls), field.attempts, field.status) == (1 + tasks.MAX_RETRIES, 1 + tasks.MAX_RETRIES, "failed")
    assert (
        field.error
        == "The database could not be reached to store the result (server closed the connection); run the field again."
    )


def test_a_field_whose_segmentation_weights_are_missing_fails_with_a_sentence_for_the_user(
    queued_field, ml_settings, monkeypatch
):
    from cells import ml_config

    Field.objects.filter(pk=queued_field.pk).update(segmentation_backend="")
    queued_field.job.__class__.objects.filter(pk=queued_field.job_id).update(segmentation_backend="unet")
    ml_settings.ML_NUCLEI_WEIGHTS = ml_settings.ML_CELL_WEIGHTS = ""
    ml_config.get_segmenter.cache_clear()
    try:
        tasks.process_field.apply(args=[queued_field.pk])
    finally:
        ml_config.get_segmenter.cache_clear()
    field = Field.objects.get(pk=queued_field.pk)
    assert field.status == "failed"
    assert field.error == (
        "The segmentation this job chose cannot run on this server: its network weights are missing or unusable. "
        "Upload the field again with the classical segmentation, or ask the administrator to install the weights "
        "(ML_NUCLEI_WEIGHTS and ML_CELL_WEIGHTS)."
    )
    assert ".." not in field.error and "python -m" not in field.error
