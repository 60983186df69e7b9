"""A field through `ml` and into rows: cells, label images, viewer pictures, progress and failure."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cells import processing, selectors
from cells.models import Cell, CellPrediction, Field
from ml.encoding import decode_rle
from ml.pipeline import analyse_field
from ml.segmentation import Segmenter
from tests.factories import field_images, make_field, make_job
from tests.ml.support import FOREGROUND, constant_network

pytestmark = pytest.mark.django_db


def test_field_process_stores_cells_whose_rles_decode_to_the_segmentation(stored_field, ml_settings):
    field = stored_field()
    processing.field_process(field_id=field.pk)
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


def test_field_process_segments_with_the_unet_backend_the_job_chose(stored_field, ml_settings, tmp_path):
    ml_settings.ML_NUCLEI_WEIGHTS = str(constant_network(tmp_path / "nuclei.pt", kind="nuclei", logits=FOREGROUND))
    ml_settings.ML_CELL_WEIGHTS = str(constant_network(tmp_path / "cell.pt", kind="cell", logits=FOREGROUND))
    field = stored_field(segmentation_backend="unet")
    processing.field_process(field_id=field.pk)
    field.refresh_from_db()
    assert (field.status, field.segmentation_backend) == ("done", "unet")
    assert field.channels_used == ["blue", "red", "yellow"]
    # Foreground everywhere: one cell covering the field.
    (cell,) = field.cells.all()
    assert cell.area_px == field.width * field.height


def test_field_process_without_a_trained_model_stores_no_predictions(stored_field, ml_settings):
    ml_settings.ML_MODEL_PATH = ""
    field = stored_field()
    processing.field_process(field_id=field.pk)
    field.refresh_from_db()
    assert field.status == "done" and field.model_name == ""
    assert field.cells.count() == 4
    assert list(field.cells.values_list("probabilities", flat=True)) == [None] * 4


def test_field_process_with_the_shipped_model_stores_19_probabilities_per_cell(stored_field, ml_settings):
    field = stored_field(size_px=256)
    processing.field_process(field_id=field.pk)
    field.refresh_from_db()
    assert (field.status, field.model_name) == ("done", "hpaweb-synth-v1")
    assert len(field.image_probabilities) == 19
    for cell in field.cells.all():
        assert len(cell.probabilities) == 19 and cell.model_name == "hpaweb-synth-v1"
        assert (cell.top_class, cell.top_confidence) == (int(np.argmax(cell.probabilities)), max(cell.probabilities))


def test_field_process_run_twice_keeps_one_set_of_cells(stored_field, ml_settings):
    field = stored_field()
    processing.field_process(field_id=field.pk)
    first = sorted(Cell.objects.filter(field=field).values_list("label", "area_px"))
    Field.objects.filter(pk=field.pk).update(status=Field.Status.QUEUED)
    processing.field_process(field_id=field.pk)
    assert sorted(Cell.objects.filter(field=field).values_list("label", "area_px")) == first


def test_field_process_leaves_a_field_that_is_done_as_it_is(stored_field, ml_settings):
    ml_settings.ML_MODEL_PATH = ""
    field = stored_field(size_px=64)
    processing.field_process(field_id=field.pk)
    done = Field.objects.get(pk=field.pk)
    processing.field_process(field_id=field.pk)
    again = Field.objects.get(pk=field.pk)
    assert (again.attempts, again.finished_at, again.status) == (1, done.finished_at, "done")


def test_field_process_fails_with_a_reason_when_a_stored_channel_is_corrupt(stored_field, ml_settings):
    field = stored_field()
    Path(field.green.path).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    processing.field_process(field_id=field.pk)
    field.refresh_from_db()
    assert field.status == "failed"
    assert "green" in field.error
    assert Path(field.blue.path).is_file()


def test_field_process_fails_a_stored_field_over_a_lowered_size_limit(stored_field, ml_settings):
    field = stored_field(size_px=64)
    ml_settings.HPAWEB_MAX_SIDE_PX = 32
    processing.field_process(field_id=field.pk)
    field.refresh_from_db()
    assert (field.status, field.attempts, field.cells.count()) == ("failed", 1, 0)
    assert "32" in field.error


def test_field_process_reports_the_start_of_each_stage_then_saving(stored_field, ml_settings, monkeypatch):
    ml_settings.ML_MODEL_PATH = ""
    field = stored_field(size_px=64)
    reports = []

    def record(*, field_id: int, status: str, progress: float) -> None:
        reports.append((status, progress))

    monkeypatch.setattr(processing, "field_set_progress", record)
    processing.field_process(field_id=field.pk)
    # Segmenting at 0.0, encoding at 0.6 (its end is held at its start), saving at 0.9; 1.0 once stored.
    assert reports == [("segmenting", 0.0), ("segmenting", 0.6), ("segmenting", 0.6), ("classifying", 0.9)]
    assert Field.objects.get(pk=field.pk).progress == 1.0


def test_field_process_stores_viewer_images_and_a_thumbnail_per_cell(stored_field, ml_settings):
    from ml.render import CELL_OUTLINE_RGB, inner_boundaries
    from ml.viewer import decode_ids_rgb

    field = stored_field()
    processing.field_process(field_id=field.pk)
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


def test_field_process_run_again_replaces_viewer_files(
    stored_field, ml_settings, media_files, django_capture_on_commit_callbacks
):
    field = stored_field()
    processing.field_process(field_id=field.pk)
    Field.objects.filter(pk=field.pk).update(status=Field.Status.QUEUED)
    files_once = len(media_files())
    with django_capture_on_commit_callbacks(execute=True):  # the previous run's files go once the new rows are in
        processing.field_process(field_id=field.pk)
    assert field.images.count() == 7
    assert len(media_files()) == files_once


def test_field_store_result_stores_an_analysed_field_with_its_pictures(owner, media_files):
    images = field_images(size_px=256)
    result = analyse_field(images, segmenter=Segmenter("classical"), predictor=None, viewer=True)
    field = make_field(job=make_job(owner=owner), name="bench-1", size_px=256, status=Field.Status.SEGMENTING)
    processing.field_store_result(field=field, result=result)
    field.refresh_from_db()
    assert (field.status, field.progress, field.segmentation_backend, field.channels_used) == (
        "done",
        1.0,
        "classical",
        list(result.segmentation.channels_used),
    )
    assert list(field.cells.values_list("label", flat=True)) == [cell.cell_id for cell in result.cells]
    names = sorted(path.name for path in media_files())
    assert names == sorted(
        [
            "bench-1_cells.png",
            "bench-1_nuclei.png",
            "bench-1_preview.jpg",
            "cell-ids.png",
            "cell-outlines.png",
            "nucleus-outlines.png",
        ]
        + [f"{channel}.jpg" for channel in ("red", "green", "blue", "yellow")]
        + [f"{cell.cell_id}.jpg" for cell in result.cells]
    )


def test_field_fail_keeps_the_reason_and_the_time_it_finished(stored_field):
    field = stored_field(size_px=64)
    processing.field_fail(field_id=field.pk, reason="The green channel is unreadable.")
    field.refresh_from_db()
    assert (field.status, field.error, field.is_finished) == ("failed", "The green channel is unreadable.", True)
    assert field.finished_at is not None


def test_field_set_progress_writes_the_stage_and_share_done(stored_field):
    field = stored_field(size_px=64)
    processing.field_set_progress(field_id=field.pk, status=Field.Status.CLASSIFYING, progress=0.7)
    field.refresh_from_db()
    assert (field.status, field.progress) == ("classifying", 0.7)


@pytest.fixture
def two_models(ml_settings, tiny_classifier_file, tmp_path):
    """The job default (the tiny classifier named by ML_MODEL_PATH) and a second, differently seeded one."""
    import torch

    from cells import registry
    from cells.models import RegisteredModel
    from tests.ml.support import save_tiny_classifier

    ml_settings.ML_MODEL_PATH = str(tiny_classifier_file)
    first = registry.classifier_default()
    torch.manual_seed(1)  # other weights than the default's
    other = save_tiny_classifier(tmp_path / "other-classifier.pt")
    second = RegisteredModel.objects.create(
        name="other-classifier", sha256=registry.file_sha256(other), source_path=str(other), input_size_px=32
    )
    return first, second


def test_field_process_stores_the_models_predictions_with_the_field_and_cells(stored_field, two_models):
    first, _ = two_models
    field = stored_field()
    processing.field_process(field_id=field.pk)
    field.refresh_from_db()
    assert field.classifier == first and field.model_name == "tiny-classifier"
    prediction = field.predictions.get()
    assert (prediction.classifier, prediction.model_name, prediction.model_version) == (first, "tiny-classifier", "1")
    assert prediction.image_probabilities == field.image_probabilities
    cells = list(field.cells.order_by("label"))
    assert {cell.classifier_id for cell in cells} == {first.pk}
    assert [row.probabilities for row in prediction.cells.order_by("cell__label")] == [c.probabilities for c in cells]
    # The tiny checkpoint carries no description of its training cells: familiarity cannot be told.
    assert field.unfamiliar_share is None and {cell.familiarity for cell in cells} == {None}


def test_field_classify_makes_another_models_predictions_current_and_keeps_the_earlier_ones(stored_field, two_models):
    first, second = two_models
    field = stored_field()
    processing.field_process(field_id=field.pk)
    before = {cell.label: cell.probabilities for cell in field.cells.all()}
    processing.field_classify(field_id=field.pk, classifier_id=second.pk)
    field.refresh_from_db()
    assert field.status == "done" and field.classifier == second and field.model_name == "other-classifier"
    assert [p.classifier for p in field.predictions.order_by("id")] == [first, second]
    kept = field.predictions.get(classifier=first)
    assert {row.cell.label: row.probabilities for row in kept.cells.select_related("cell")} == before
    now = {cell.label: cell.probabilities for cell in field.cells.all()}
    assert now != before and set(now) == set(before)
    assert {cell.classifier_id for cell in field.cells.all()} == {second.pk}


def test_processing_a_field_again_drops_every_models_predictions_of_the_old_cells(stored_field, two_models):
    _, second = two_models
    field = stored_field()
    processing.field_process(field_id=field.pk)
    processing.field_classify(field_id=field.pk, classifier_id=second.pk)
    Field.objects.filter(pk=field.pk).update(status=Field.Status.QUEUED)
    processing.field_process(field_id=field.pk)
    assert [p.model_name for p in field.predictions.all()] == ["tiny-classifier"]


def test_model_comparison_counts_agreement_per_class_and_lists_disagreeing_cells(stored_field, two_models):
    first, second = two_models
    field = stored_field()
    processing.field_process(field_id=field.pk)
    processing.field_classify(field_id=field.pk, classifier_id=second.pk)
    comparison = selectors.model_comparison(job=field.job, first=first, second=second, min_confidence=0.5)
    cells = list(field.cells.all())
    assert comparison.cells == len(cells)
    rows = {row.cell_id: {} for row in CellPrediction.objects.filter(cell__field=field)}
    for row in CellPrediction.objects.filter(cell__field=field).select_related("prediction"):
        rows[row.cell_id][row.prediction.classifier_id] = row
    differing = {c for c, pair in rows.items() if pair[first.pk].top_class != pair[second.pk].top_class}
    assert set(comparison.disagreeing_cell_ids) == differing
    assert comparison.top_class_agreement == (len(cells) - len(differing)) / len(cells)
    for entry in comparison.per_class:
        calls_first = {c for c, pair in rows.items() if pair[first.pk].probabilities[entry["index"]] >= 0.5}
        calls_second = {c for c, pair in rows.items() if pair[second.pk].probabilities[entry["index"]] >= 0.5}
        assert (entry["first"], entry["second"], entry["both"]) == (
            len(calls_first),
            len(calls_second),
            len(calls_first & calls_second),
        )
    assert selectors.job_models(job=field.job) == [first, second]
