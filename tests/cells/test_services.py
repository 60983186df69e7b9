from pathlib import Path

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image
from rest_framework.authtoken.models import Token

from cells import services
from cells.models import Cell, Field, Job
from ml.encoding import decode_rle
from tests.factories import field_arrays, png_bytes
from tests.ml.support import FOREGROUND, constant_network

pytestmark = pytest.mark.django_db


def _stored_files(settings) -> list[Path]:
    media = Path(settings.MEDIA_ROOT)
    return [p for p in media.rglob("*") if p.is_file()] if media.exists() else []


def _upload(files, name="f1"):
    return services.FieldUpload(name=name, channel_files=files)


def test_job_create_stores_fields_and_queues_each_on_commit(owner, channel_uploads, monkeypatch, django_capture_on_commit_callbacks):
    queued = []
    monkeypatch.setattr("cells.tasks.process_field.delay", queued.append)
    with django_capture_on_commit_callbacks(execute=True):
        job = services.job_create(owner=owner, uploads=[_upload(channel_uploads())], name="first")
    field = job.fields.get()
    assert (job.name, job.segmentation_backend) == ("first", "classical")
    assert (field.name, field.width, field.height, field.bit_depth, field.status) == ("f1", 512, 512, 8, "queued")
    assert queued == [field.pk]
    with field.green.open("rb") as handle:
        assert np.array_equal(np.asarray(Image.open(handle)), field_arrays()["green"])


def test_job_create_rejects_mismatched_channel_sizes_and_stores_nothing(owner, channel_uploads, settings):
    files = channel_uploads()
    files["red"] = SimpleUploadedFile("f1_red.png", png_bytes(field_arrays(size_px=256)["red"]))
    with pytest.raises(services.JobInputError) as excinfo:
        services.job_create(owner=owner, uploads=[_upload(files)])
    assert "f1" in excinfo.value.field_errors
    assert "size" in excinfo.value.field_errors["f1"].lower()
    assert Job.objects.count() == 0 and Field.objects.count() == 0
    assert _stored_files(settings) == []


def test_job_create_rejects_a_file_that_is_not_an_image(owner, channel_uploads):
    files = channel_uploads()
    files["green"] = SimpleUploadedFile("f1_green.png", b"this is a text file, not a PNG")
    with pytest.raises(services.JobInputError) as excinfo:
        services.job_create(owner=owner, uploads=[_upload(files)])
    assert "green" in excinfo.value.field_errors["f1"]
    assert Job.objects.count() == 0


def test_job_create_rejects_a_missing_blue_channel(owner, channel_uploads):
    with pytest.raises(services.JobInputError) as excinfo:
        services.job_create(owner=owner, uploads=[_upload(channel_uploads(channels=("red", "green", "yellow")))])
    assert "blue" in excinfo.value.field_errors["f1"]


def test_job_create_rejects_an_image_over_the_size_limit(owner, channel_uploads, settings):
    settings.HPAWEB_MAX_SIDE_PX = 500
    with pytest.raises(services.JobInputError) as excinfo:
        services.job_create(owner=owner, uploads=[_upload(channel_uploads())])
    assert "500" in excinfo.value.field_errors["f1"]
    assert Job.objects.count() == 0


def test_job_create_keeps_earlier_jobs_when_a_batch_is_rejected(owner, channel_uploads, settings):
    services.job_create(owner=owner, uploads=[_upload(channel_uploads())])
    files_before = sorted(_stored_files(settings))
    bad = channel_uploads(field_id="f2")
    bad["blue"] = SimpleUploadedFile("f2_blue.png", b"\x89PNG broken")
    with pytest.raises(services.JobInputError) as excinfo:
        services.job_create(owner=owner, uploads=[_upload(channel_uploads(), "f1"), _upload(bad, "f2")])
    assert list(excinfo.value.field_errors) == ["f2"]
    assert Job.objects.count() == 1
    assert sorted(_stored_files(settings)) == files_before


def _stored_job(owner, channel_uploads, **kwargs) -> Field:
    job = services.job_create(owner=owner, uploads=[_upload(channel_uploads(**kwargs))])
    return job.fields.get()


def test_field_process_stores_cells_whose_rles_decode_to_the_segmentation(owner, channel_uploads, ml_settings):
    field = _stored_job(owner, channel_uploads)
    services.field_process(field_id=field.pk)
    field.refresh_from_db()
    assert (field.status, field.progress, field.error) == ("done", 1.0, "")
    with field.cell_labels.open("rb") as handle:
        cell_labels = np.asarray(Image.open(handle))
    with field.nuclei_labels.open("rb") as handle:
        nuclei_labels = np.asarray(Image.open(handle))
    cells = list(field.cells.all())
    assert len(cells) == 4
    for cell in cells:
        assert np.array_equal(decode_rle(cell.mask_rle), cell_labels == cell.label)
        assert np.array_equal(decode_rle(cell.nucleus_rle), nuclei_labels == cell.label)
        assert cell.area_px == int((cell_labels == cell.label).sum())
        rows, cols = np.nonzero(cell_labels == cell.label)
        assert cell.bbox == (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1)
    assert field.preview


def test_field_process_segments_with_the_unet_backend_the_job_chose(owner, channel_uploads, ml_settings, tmp_path):
    ml_settings.ML_NUCLEI_WEIGHTS = str(constant_network(tmp_path / "nuclei.pt", kind="nuclei", logits=FOREGROUND))
    ml_settings.ML_CELL_WEIGHTS = str(constant_network(tmp_path / "cell.pt", kind="cell", logits=FOREGROUND))
    job = services.job_create(owner=owner, uploads=[_upload(channel_uploads())], segmentation_backend="unet")
    field = job.fields.get()
    services.field_process(field_id=field.pk)
    field.refresh_from_db()
    assert (field.status, field.segmentation_backend) == ("done", "unet")
    assert field.channels_used == ["blue", "red", "yellow"]
    # Foreground everywhere: one cell covering the field.
    (cell,) = field.cells.all()
    assert cell.area_px == field.width * field.height


def test_field_process_without_a_trained_model_stores_no_predictions(owner, channel_uploads, ml_settings):
    ml_settings.ML_MODEL_PATH = ""
    field = _stored_job(owner, channel_uploads)
    services.field_process(field_id=field.pk)
    field.refresh_from_db()
    assert field.status == "done" and field.model_name == ""
    assert field.cells.count() == 4
    assert list(field.cells.values_list("probabilities", flat=True)) == [None] * 4


def test_field_process_run_twice_keeps_one_set_of_cells(owner, channel_uploads, ml_settings):
    field = _stored_job(owner, channel_uploads)
    services.field_process(field_id=field.pk)
    first = sorted(Cell.objects.filter(field=field).values_list("label", "area_px"))
    Field.objects.filter(pk=field.pk).update(status=Field.Status.QUEUED)
    services.field_process(field_id=field.pk)
    assert sorted(Cell.objects.filter(field=field).values_list("label", "area_px")) == first


def test_field_process_fails_with_a_reason_when_a_stored_channel_is_corrupt(owner, channel_uploads, ml_settings):
    field = _stored_job(owner, channel_uploads)
    Path(field.green.path).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    services.field_process(field_id=field.pk)
    field.refresh_from_db()
    assert field.status == "failed"
    assert "green" in field.error
    assert Path(field.blue.path).is_file()


def test_field_retry_requeues_a_failed_field(owner, channel_uploads, monkeypatch, django_capture_on_commit_callbacks):
    field = _stored_job(owner, channel_uploads)
    services.field_fail(field_id=field.pk, reason="broken")
    queued = []
    monkeypatch.setattr("cells.tasks.process_field.delay", queued.append)
    with django_capture_on_commit_callbacks(execute=True):
        services.field_retry(field=Field.objects.get(pk=field.pk))
    field.refresh_from_db()
    assert (field.status, field.error, queued) == ("queued", "", [field.pk])


def test_field_process_stores_viewer_images_and_a_thumbnail_per_cell(owner, channel_uploads, ml_settings):
    from ml.render import CELL_OUTLINE_RGB, inner_boundaries
    from ml.viewer import decode_ids_rgb

    field = _stored_job(owner, channel_uploads)
    services.field_process(field_id=field.pk)
    field.refresh_from_db()
    images = {image.kind: image for image in field.images.all()}
    assert sorted(images) == sorted(["red", "green", "blue", "yellow", "cell-outlines", "nucleus-outlines", "cell-ids"])
    assert {(image.width, image.height) for image in images.values()} == {(512, 512)}
    with images["cell-ids"].file.open("rb") as handle:
        cell_ids = decode_ids_rgb(np.asarray(Image.open(handle)))
    with field.cell_labels.open("rb") as handle:
        assert np.array_equal(cell_ids, np.asarray(Image.open(handle)))
    with images["cell-outlines"].file.open("rb") as handle:
        outlines = np.asarray(Image.open(handle).convert("RGBA"))
    with field.cell_labels.open("rb") as handle:
        labels = np.asarray(Image.open(handle))
    assert np.array_equal(outlines[..., 3] == 255, inner_boundaries(labels))  # 512 px: viewer scale 1
    assert np.unique(outlines[outlines[..., 3] == 255][:, :3], axis=0).tolist() == [list(CELL_OUTLINE_RGB)]
    assert not outlines[outlines[..., 3] == 0].any()
    for cell in field.cells.all():
        with cell.thumbnail.open("rb") as handle:
            thumbnail = Image.open(handle)
            assert (thumbnail.format, thumbnail.size) == ("JPEG", (128, 128))


def test_field_process_run_again_replaces_viewer_files(owner, channel_uploads, ml_settings, settings):
    field = _stored_job(owner, channel_uploads)
    services.field_process(field_id=field.pk)
    Field.objects.filter(pk=field.pk).update(status=Field.Status.QUEUED)
    files_once = len(_stored_files(settings))
    services.field_process(field_id=field.pk)
    assert field.images.count() == 7
    assert len(_stored_files(settings)) == files_once


def test_job_delete_removes_rows_and_every_stored_file(owner, channel_uploads, ml_settings, settings, django_capture_on_commit_callbacks):
    field = _stored_job(owner, channel_uploads)
    services.field_process(field_id=field.pk)
    assert len(_stored_files(settings)) == 4 + 3 + 7 + 4  # channels, labels + preview, viewer images, thumbnails
    with django_capture_on_commit_callbacks(execute=True):
        services.job_delete(job=field.job)
    assert (Job.objects.count(), Field.objects.count(), Cell.objects.count()) == (0, 0, 0)
    assert _stored_files(settings) == []


def test_api_token_regenerate_replaces_the_previous_token(owner):
    first = services.api_token_regenerate(user=owner)
    second = services.api_token_regenerate(user=owner)
    assert first.key != second.key
    assert list(Token.objects.filter(user=owner).values_list("key", flat=True)) == [second.key]
