"""Reads: each sees only the requesting user's rows (another user's are missing, never forbidden),
and progress, filters, rankings and counts come out as the pages and the API show them."""

import pytest
from django.http import Http404
from knox.models import AuthToken

from cells import selectors
from cells.models import Field, FieldImage
from ml.classifier.predictor import UNDESCRIBED_SUMMARY
from tests.factories import make_cell, make_field, make_job, probabilities_peaking_at

pytestmark = pytest.mark.django_db


@pytest.fixture
def job(owner):
    """A job of two fields: f1 with cells 1-3 (cell i peaks at class i, confidence 0.5 + 0.1 i) and an empty f2."""
    job = make_job(owner=owner, name="plate 1")
    f1 = make_field(job=job, name="f1", status=Field.Status.DONE, progress=1.0)
    make_field(job=job, name="f2")
    for label in (1, 2, 3):
        make_cell(field=f1, label=label, probabilities=probabilities_peaking_at(label, peak=0.5 + 0.1 * label))
    return job


def test_job_list_holds_only_the_users_jobs_newest_first_with_cell_counts(owner, outsider, job):
    newer = make_job(owner=owner, name="plate 2")
    make_job(owner=outsider, name="theirs")
    jobs = list(selectors.job_list(user=owner))
    assert [j.name for j in jobs] == [newer.name, "plate 1"]
    assert [(field.name, field.cell_count) for field in jobs[1].fields.all()] == [("f1", 3), ("f2", 0)]


def test_another_users_job_field_and_cell_are_missing(outsider, job):
    field = job.fields.get(name="f1")
    cell = field.cells.first()
    with pytest.raises(Http404):
        selectors.job_get(user=outsider, job_id=job.pk)
    with pytest.raises(Http404):
        selectors.field_get(user=outsider, field_id=field.pk)
    with pytest.raises(Http404):
        selectors.cell_get(user=outsider, cell_id=cell.pk)
    assert list(selectors.field_list(user=outsider)) == []
    assert list(selectors.cell_list(user=outsider)) == []


def test_field_list_of_a_job_counts_each_fields_cells(owner, job):
    assert [(f.name, f.cell_count) for f in selectors.field_list(user=owner, job=job)] == [("f1", 3), ("f2", 0)]
    assert selectors.field_get(user=owner, field_id=job.fields.get(name="f1").pk).cell_count == 3


def test_field_image_get_finds_the_owners_image_of_a_kind_only(owner, outsider, job):
    field = job.fields.get(name="f1")
    image = FieldImage.objects.create(field=field, kind="green", file="green.jpg", width=64, height=64)
    assert selectors.field_image_get(user=owner, field_id=field.pk, kind="green") == image
    for user, kind in ((owner, "red"), (outsider, "green")):
        with pytest.raises(Http404):
            selectors.field_image_get(user=user, field_id=field.pk, kind=kind)


def test_field_labels_get_is_missing_until_the_field_has_labels_of_that_kind(owner, job):
    field = job.fields.get(name="f1")
    with pytest.raises(Http404, match="^This field has no label image of that kind yet.$"):
        selectors.field_labels_get(user=owner, field_id=field.pk, kind="cells")
    Field.objects.filter(pk=field.pk).update(cell_labels="f1_cells.png")
    found, stored = selectors.field_labels_get(user=owner, field_id=field.pk, kind="cells")
    assert (found, stored.name) == (field, "f1_cells.png")
    with pytest.raises(Http404):
        selectors.field_labels_get(user=owner, field_id=field.pk, kind="preview")


def test_field_neighbours_are_the_fields_before_and_after_in_the_job(job):
    f1, f2 = job.fields.order_by("id")
    assert selectors.field_neighbours(field=f1) == (None, f2)
    assert selectors.field_neighbours(field=f2) == (f1, None)


def test_cell_list_filters_and_ranks_by_the_chosen_class(owner, job):
    by_top = selectors.cell_list(user=owner, job=job, min_confidence=0.65, order="-confidence")
    assert [(cell.label, round(cell.confidence, 2)) for cell in by_top] == [(3, 0.8), (2, 0.7)]
    by_class = selectors.cell_list(user=owner, job=job, class_index=2, order="confidence")
    assert [(cell.label, cell.confidence) for cell in by_class] == [(1, 0.01), (3, 0.01), (2, 0.7)]
    assert [cell.label for cell in selectors.cell_list(user=owner, field=job.fields.get(name="f2"))] == []


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        (("queued", "queued"), ("queued", 0.0)),
        (("segmenting", "queued"), ("running", 0.3)),
        (("done", "done"), ("done", 1.0)),
        (("failed", "failed"), ("failed", 1.0)),
        (("done", "failed"), ("partial", 1.0)),
    ],
)
def test_job_progress_says_where_the_job_stands(owner, statuses, expected):
    job = make_job(owner=owner)
    for index, status in enumerate(statuses):
        make_field(job=job, name=f"f{index}", status=status, progress=0.6 if status == "segmenting" else 0.0)
    progress = selectors.job_progress(job=job)
    assert (progress.status, round(progress.fraction, 6)) == expected
    assert (progress.total, progress.cells, progress.is_finished) == (
        2,
        0,
        expected[0] in ("done", "failed", "partial"),
    )


def test_job_progress_of_a_job_without_fields_is_queued_at_zero(owner):
    progress = selectors.job_progress(job=make_job(owner=owner))
    assert (progress.status, progress.fraction, progress.total) == ("queued", 0.0, 0)


def test_cell_top_classes_are_the_likeliest_above_the_threshold_or_else_the_top_one(owner, job):
    field = job.fields.get(name="f2")
    spread = [0.0] * 19
    spread[0], spread[4], spread[7] = 0.6, 0.35, 0.2
    assert selectors.cell_top_classes(make_cell(field=field, label=1, probabilities=spread)) == [
        ("Nucleoplasm", 0.6),
        ("Nuclear speckles", 0.35),
    ]
    low = make_cell(field=field, label=2, probabilities=probabilities_peaking_at(18, peak=0.2))
    assert selectors.cell_top_classes(low) == [("Negative", 0.2)]
    assert selectors.cell_top_classes(make_cell(field=field, label=3)) == []


def test_class_counts_count_the_cells_reaching_the_confidence_per_class(job):
    counts = selectors.class_counts(job=job, min_confidence=0.65)
    assert len(counts) == 19
    assert [(count.index, count.name, count.cells) for count in counts if count.cells] == [
        (2, "Nucleoli", 1),
        (3, "Nucleoli fibrillar center", 1),
    ]


def test_job_is_classified_once_a_cell_has_predictions(owner, job):
    unclassified = make_job(owner=owner)
    make_cell(field=make_field(job=unclassified), label=1)
    assert (selectors.job_is_classified(job=job), selectors.job_is_classified(job=unclassified)) == (True, False)


def test_viewer_cells_give_each_cell_its_box_area_and_rounded_probabilities(owner):
    field = make_field(job=make_job(owner=owner))
    cell = make_cell(field=field, label=7, probabilities=[1 / 3] * 19, bbox=(2, 3, 12, 8))
    unclassified = make_cell(field=field, label=8)
    assert selectors.viewer_cells(field=field) == [
        {
            "id": cell.pk,
            "label": 7,
            "bbox": [2, 3, 12, 8],
            "area_px": 50,
            "probabilities": [0.3333] * 19,
            "familiarity": None,
            "unfamiliar": None,
            "qc_flags": [],
            "measurements": None,
        },
        {
            "id": unclassified.pk,
            "label": 8,
            "bbox": [0, 0, 10, 10],
            "area_px": 100,
            "probabilities": None,
            "familiarity": None,
            "unfamiliar": None,
            "qc_flags": [],
            "measurements": None,
        },
    ]


def test_api_token_get_is_the_users_token_or_none(owner, outsider):
    token, _ = AuthToken.objects.create(user=owner)
    assert (selectors.api_token_get(user=owner), selectors.api_token_get(user=outsider)) == (token, None)


def test_model_list_names_the_registered_classifiers_and_which_backends_can_run(settings, owner, tiny_classifier_file):
    settings.ML_MODEL_PATH = str(tiny_classifier_file)
    settings.ML_NUCLEI_WEIGHTS = settings.ML_CELL_WEIGHTS = ""
    rows = [(m.kind, m.name, m.available, m.is_default, m.description) for m in selectors.model_list(user=owner)]
    assert rows == [
        (
            "classifier",
            "hpaweb-synth-v1",
            True,
            False,
            "Trained on synthetic fields only; not validated on real images.",
        ),
        ("classifier", "tiny-classifier", True, True, UNDESCRIBED_SUMMARY),
        (
            "segmentation",
            "classical",
            True,
            False,
            "Seeded watershed on the nucleus and cytoplasm channels; needs no weights.",
        ),
        (
            "segmentation",
            "unet",
            False,
            False,
            "HPA-compatible DPN-U-Net; needs ML_NUCLEI_WEIGHTS and ML_CELL_WEIGHTS.",
        ),
    ]


def test_model_list_says_when_no_default_classifier_is_installed(settings, owner):
    settings.ML_MODEL_PATH = ""
    first = selectors.model_list(user=owner)[0]
    assert (first.kind, first.available, first.name) == ("classifier", False, "")
    assert first.description.startswith("No default classifier is installed (ML_MODEL_PATH)")
