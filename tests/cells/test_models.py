"""What the rows know of themselves: their files, where files are kept, their state, names and addresses."""

import pytest
from django.core.files.base import ContentFile

from cells.models import FieldImage
from tests.factories import make_cell, make_field, make_job

pytestmark = pytest.mark.django_db


def test_channel_files_are_the_uploaded_channels_in_channel_order(owner):
    field = make_field(job=make_job(owner=owner), blue="f1_blue.png", green="f1_green.png", yellow="f1_yellow.png")
    assert {channel: stored.name for channel, stored in field.channel_files().items()} == {
        "green": "f1_green.png",
        "blue": "f1_blue.png",
        "yellow": "f1_yellow.png",
    }
    assert list(field.channel_files()) == ["green", "blue", "yellow"]


def test_stored_files_are_every_file_the_field_owns_and_nothing_empty(owner):
    field = make_field(
        job=make_job(owner=owner), multichannel="f1.tif", nuclei_labels="f1_nuclei.png", preview="f1_preview.jpg"
    )
    assert [stored.name for stored in field.stored_files()] == ["f1.tif", "f1_nuclei.png", "f1_preview.jpg"]
    assert make_field(job=field.job, name="f2").stored_files() == []


def test_files_are_kept_under_the_job_and_the_fields_uid(owner):
    field = make_field(job=make_job(owner=owner))
    field.green.save("f1_green.png", ContentFile(b"png"))
    image = FieldImage(field=field, kind="green", width=64, height=64)
    image.file.save("green.jpg", ContentFile(b"jpeg"))
    cell = make_cell(field=field, label=3)
    cell.thumbnail.save("3.jpg", ContentFile(b"jpeg"))
    folder = f"fields/{field.job_id}/{field.uid}"
    assert (field.green.name, image.file.name, cell.thumbnail.name) == (
        f"{folder}/f1_green.png",
        f"{folder}/viewer/green.jpg",
        f"{folder}/cells/3.jpg",
    )


@pytest.mark.parametrize(
    ("status", "finished"),
    [("queued", False), ("segmenting", False), ("classifying", False), ("done", True), ("failed", True)],
)
def test_a_field_is_finished_once_done_or_failed(owner, status, finished):
    assert make_field(job=make_job(owner=owner), status=status).is_finished is finished


def test_a_cells_bbox_is_its_half_open_box(owner):
    cell = make_cell(field=make_field(job=make_job(owner=owner)), label=1, bbox=(4, 5, 20, 30))
    assert cell.bbox == (4, 5, 20, 30)


def test_rows_name_themselves_and_link_to_their_pages(owner):
    unnamed = make_job(owner=owner)
    job = make_job(owner=owner, name="plate 7")
    field = make_field(job=job, name="A3")
    image = FieldImage.objects.create(field=field, kind="cell-ids", file="cell-ids.png", width=64, height=64)
    cell = make_cell(field=field, label=12)
    assert (str(unnamed), str(job), str(field), str(image), str(cell)) == (
        f"Job {unnamed.pk}",
        "plate 7",
        "A3",
        "A3 cell-ids",
        "A3 cell 12",
    )
    assert (job.get_absolute_url(), field.get_absolute_url()) == (f"/jobs/{job.pk}/", f"/fields/{field.pk}/")
