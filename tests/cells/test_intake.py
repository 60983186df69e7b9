"""Jobs in and out: create (validate, store, queue on commit), retry, delete, API token."""

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from knox.models import AuthToken
from PIL import Image

from cells import intake, processing
from cells.models import Cell, Field, Job
from cells.uploads import FieldUpload, JobInputError
from tests.factories import field_arrays, png_bytes

pytestmark = pytest.mark.django_db


def _upload(files, name="f1"):
    return FieldUpload(name=name, channel_files=files)


def test_job_create_stores_fields_and_queues_each_on_commit(
    owner, channel_uploads, sent_to_worker, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        job = intake.job_create(owner=owner, uploads=[_upload(channel_uploads())], name="first")
        assert sent_to_worker == []  # nothing leaves before the job is committed
    field = job.fields.get()
    assert (job.name, job.segmentation_backend) == ("first", "classical")
    assert (field.name, field.width, field.height, field.bit_depth, field.status) == ("f1", 512, 512, 8, "queued")
    assert sent_to_worker == [field.pk]
    with field.green.open("rb") as handle:
        assert np.array_equal(np.asarray(Image.open(handle)), field_arrays()["green"])


def test_job_create_stores_each_channel_under_the_field_id_and_channel(owner, channel_uploads):
    files = channel_uploads(channels=("green", "blue"))
    files["green"] = SimpleUploadedFile("scan 1.PNG", files["green"].read())
    field = intake.job_create(owner=owner, uploads=[_upload(files, "A1")]).fields.get()
    assert sorted(field.channel_files()) == ["blue", "green"]
    assert field.green.name == f"fields/{field.job_id}/{field.uid}/A1_green.png"
    assert field.blue.name == f"fields/{field.job_id}/{field.uid}/A1_blue.png"


def test_job_create_rejects_mismatched_channel_sizes_and_stores_nothing(owner, channel_uploads, media_files):
    files = channel_uploads()
    files["red"] = SimpleUploadedFile("f1_red.png", png_bytes(field_arrays(size_px=256)["red"]))
    with pytest.raises(JobInputError) as excinfo:
        intake.job_create(owner=owner, uploads=[_upload(files)])
    assert "f1" in excinfo.value.field_errors
    assert "size" in excinfo.value.field_errors["f1"].lower()
    assert Job.objects.count() == 0 and Field.objects.count() == 0
    assert media_files() == []


def test_job_create_rejects_a_file_that_is_not_an_image(owner, channel_uploads):
    files = channel_uploads()
    files["green"] = SimpleUploadedFile("f1_green.png", b"this is a text file, not a PNG")
    with pytest.raises(JobInputError) as excinfo:
        intake.job_create(owner=owner, uploads=[_upload(files)])
    assert "green" in excinfo.value.field_errors["f1"]
    assert Job.objects.count() == 0


def test_job_create_rejects_a_missing_blue_channel(owner, channel_uploads):
    with pytest.raises(JobInputError) as excinfo:
        intake.job_create(owner=owner, uploads=[_upload(channel_uploads(channels=("red", "green", "yellow")))])
    assert "blue" in excinfo.value.field_errors["f1"]


def test_job_create_rejects_an_image_over_the_size_limit(owner, channel_uploads, settings):
    settings.HPAWEB_MAX_SIDE_PX = 500
    with pytest.raises(JobInputError) as excinfo:
        intake.job_create(owner=owner, uploads=[_upload(channel_uploads())])
    assert "500" in excinfo.value.field_errors["f1"]
    assert Job.objects.count() == 0


def test_job_create_keeps_earlier_jobs_when_a_batch_is_rejected(owner, channel_uploads, media_files):
    intake.job_create(owner=owner, uploads=[_upload(channel_uploads())])
    files_before = media_files()
    bad = channel_uploads(field_id="f2")
    bad["blue"] = SimpleUploadedFile("f2_blue.png", b"\x89PNG broken")
    with pytest.raises(JobInputError) as excinfo:
        intake.job_create(owner=owner, uploads=[_upload(channel_uploads(), "f1"), _upload(bad, "f2")])
    assert list(excinfo.value.field_errors) == ["f2"]
    assert Job.objects.count() == 1
    assert media_files() == files_before


def test_job_create_without_a_backend_uses_the_configured_one(owner, channel_uploads, settings):
    settings.ML_SEGMENTATION_BACKEND = "unet"
    job = intake.job_create(owner=owner, uploads=[_upload(channel_uploads(size_px=64))])
    assert job.segmentation_backend == "unet"


def test_job_create_rejects_an_unknown_segmentation_backend(owner, channel_uploads):
    with pytest.raises(JobInputError) as excinfo:
        intake.job_create(owner=owner, uploads=[_upload(channel_uploads(size_px=64))], segmentation_backend="magic")
    assert excinfo.value.field_errors == {
        "segmentation": "Unknown segmentation backend 'magic'; choose one of classical, unet."
    }
    assert Job.objects.count() == 0


def test_job_create_rejects_an_empty_upload(owner):
    with pytest.raises(JobInputError) as excinfo:
        intake.job_create(owner=owner, uploads=[])
    assert excinfo.value.field_errors == {
        "upload": "No field was uploaded; add the channel files of at least one field."
    }


def test_job_create_rejects_more_fields_than_a_job_holds(owner, channel_uploads, settings):
    settings.HPAWEB_MAX_FIELDS_PER_JOB = 1
    uploads = [_upload(channel_uploads(field_id=name, size_px=64), name) for name in ("a", "b")]
    with pytest.raises(JobInputError) as excinfo:
        intake.job_create(owner=owner, uploads=uploads)
    assert excinfo.value.field_errors == {"upload": "A job holds at most 1 fields; split the batch."}


def test_job_create_rejects_two_fields_with_one_name(owner, channel_uploads, media_files):
    uploads = [_upload(channel_uploads(size_px=64)), _upload(channel_uploads(size_px=64))]
    with pytest.raises(JobInputError) as excinfo:
        intake.job_create(owner=owner, uploads=uploads)
    assert excinfo.value.field_errors == {"f1": "Two fields share this name; every field of a job needs its own ID."}
    assert (Job.objects.count(), media_files()) == (0, [])


def test_fields_enqueue_sends_each_field_at_once(sent_to_worker):
    intake.fields_enqueue(field_ids=[3, 1, 2])
    assert sent_to_worker == [3, 1, 2]


def test_field_retry_requeues_a_failed_field(stored_field, sent_to_worker, django_capture_on_commit_callbacks):
    field = stored_field()
    processing.field_fail(field_id=field.pk, reason="broken")
    with django_capture_on_commit_callbacks(execute=True):
        intake.field_retry(field=Field.objects.get(pk=field.pk))
    field.refresh_from_db()
    assert (field.status, field.error, sent_to_worker) == ("queued", "", [field.pk])


def test_field_retry_refuses_a_field_that_has_not_failed(
    stored_field, sent_to_worker, django_capture_on_commit_callbacks
):
    field = stored_field(size_px=64)
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(ValidationError) as excinfo:
        intake.field_retry(field=field)
    assert excinfo.value.messages == ["Only a failed field can be run again."]
    assert (Field.objects.get(pk=field.pk).status, sent_to_worker) == ("queued", [])


def test_job_delete_removes_rows_and_every_stored_file(
    stored_field, ml_settings, media_files, django_capture_on_commit_callbacks
):
    field = stored_field()
    processing.field_process(field_id=field.pk)
    assert len(media_files()) == 4 + 3 + 7 + 4  # channels, labels + preview, viewer images, thumbnails
    with django_capture_on_commit_callbacks(execute=True):
        intake.job_delete(job=field.job)
    assert (Job.objects.count(), Field.objects.count(), Cell.objects.count()) == (0, 0, 0)
    assert media_files() == []


def test_job_delete_removes_files_only_once_committed(stored_field, media_files, django_capture_on_commit_callbacks):
    field = stored_field(size_px=64)
    files = media_files()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        intake.job_delete(job=field.job)
    assert (Job.objects.count(), media_files(), len(callbacks)) == (0, files, 1)
    callbacks[0]()
    assert media_files() == []


def test_api_token_regenerate_replaces_the_previous_token(owner):
    _, first_key = intake.api_token_regenerate(user=owner)
    second, second_key = intake.api_token_regenerate(user=owner)
    assert first_key != second_key
    assert list(AuthToken.objects.filter(user=owner)) == [second]


def test_api_token_regenerate_can_keep_the_previous_tokens(owner):
    first, _ = intake.api_token_regenerate(user=owner)
    second, _ = intake.api_token_regenerate(user=owner, revoke_previous=False)
    assert set(AuthToken.objects.filter(user=owner)) == {first, second}
