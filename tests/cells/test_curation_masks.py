"""Mask fixes: delete, merge and split cells through the API; each undone; everything stored follows."""

import numpy as np
import pytest
from PIL import Image

from cells import curation, processing
from cells.models import CellAnnotation, MaskEdit
from ml.encoding import decode_rle

pytestmark = pytest.mark.django_db


@pytest.fixture
def processed_field(stored_field, ml_settings):
    field = stored_field()
    processing.field_process(field_id=field.pk)
    field.refresh_from_db()
    return field


def _labels(stored) -> np.ndarray:
    with stored.open("rb") as handle:
        return np.asarray(Image.open(handle))


def _state(field):
    """What the pages and exports read of a field: its label image, its cells' masks and pictures."""
    field.refresh_from_db()
    cells = list(field.cells.order_by("label"))
    return (
        _labels(field.cell_labels).copy(),
        [(cell.label, cell.area_px, cell.mask_rle["counts"]) for cell in cells],
        sorted(image.kind for image in field.images.all()),
    )


def _vertical_line(cell) -> list[list[float]]:
    """A line from above the cell to below it through the middle of its box."""
    col = (cell.min_col + cell.max_col) / 2
    return [[cell.min_row - 5, col], [cell.max_row + 5, col]]


def test_deleting_a_cell_removes_it_from_labels_rles_and_pictures_and_undo_brings_it_back(processed_field, owner_api):
    before = _state(processed_field)
    cell = processed_field.cells.get(label=2)
    response = owner_api.post(f"/api/cells/{cell.pk}/mask/delete/")
    assert response.status_code == 201, response.json()
    labels, cells, _ = _state(processed_field)
    assert [label for label, _, _ in cells] == [1, 3, 4]
    assert not (labels == 2).any()
    assert processed_field.cells.get(label=1).thumbnail
    undone = owner_api.post(f"/api/mask-edits/{response.json()['id']}/undo/")
    assert undone.status_code == 200 and undone.json()["undone_at"]
    after_labels, after_cells, after_images = _state(processed_field)
    assert np.array_equal(after_labels, before[0]) and after_cells == before[1] and after_images == before[2]


def test_splitting_a_cell_along_a_line_makes_two_cells_and_merging_them_back_makes_one(processed_field, owner_api):
    original = _state(processed_field)
    cell = processed_field.cells.get(label=1)
    split = owner_api.post(f"/api/cells/{cell.pk}/mask/split/", {"line": _vertical_line(cell)}, format="json")
    assert split.status_code == 201, split.json()
    assert split.json()["details"]["cells"] == [1, 5]
    labels, cells, _ = _state(processed_field)
    areas = {label: area for label, area, _ in cells}
    assert set(areas) == {1, 2, 3, 4, 5}
    assert areas[1] + areas[5] == {label: area for label, area, _ in original[1]}[1]
    for stored in processed_field.cells.filter(label__in=[1, 5]):
        assert np.array_equal(decode_rle(stored.mask_rle), labels == stored.label)
        assert stored.probabilities is not None and len(stored.probabilities) == 19
    first, second = processed_field.cells.get(label=1), processed_field.cells.get(label=5)
    merged = owner_api.post(f"/api/cells/{first.pk}/mask/merge/", {"other": second.pk}, format="json")
    assert merged.status_code == 201, merged.json()
    labels, cells, _ = _state(processed_field)
    assert [label for label, _, _ in cells] == [1, 2, 3, 4]
    assert (labels == 1).sum() == {label: area for label, area, _ in original[1]}[1]
    # Undone newest first: the merge, then the split.
    edits = list(MaskEdit.objects.order_by("id"))
    refused = owner_api.post(f"/api/mask-edits/{edits[0].pk}/undo/")
    assert refused.status_code == 409
    assert refused.json()["detail"] == "Undo the field's later mask fixes first; fixes are undone newest first."
    assert owner_api.post(f"/api/mask-edits/{edits[1].pk}/undo/").status_code == 200
    assert owner_api.post(f"/api/mask-edits/{edits[0].pk}/undo/").status_code == 200
    assert _state(processed_field)[1] == original[1]


def test_merging_cells_that_do_not_touch_is_refused_and_nothing_changes(processed_field, owner_api, media_files):
    before, files = _state(processed_field), media_files()
    first, fourth = processed_field.cells.get(label=1), processed_field.cells.get(label=4)
    response = owner_api.post(f"/api/cells/{first.pk}/mask/merge/", {"other": fourth.pk}, format="json")
    assert response.status_code == 400
    assert response.json()["detail"] == (
        "Cells 1 and 4 do not touch, so they cannot be merged; merge only neighbouring cells that are really one."
    )
    after = _state(processed_field)
    assert np.array_equal(after[0], before[0]) and after[1] == before[1]
    assert (MaskEdit.objects.count(), media_files()) == (0, files)


def test_a_split_line_that_does_not_cross_the_cell_is_refused_and_nothing_changes(
    processed_field, owner_api, media_files
):
    before, files = _state(processed_field), media_files()
    cell = processed_field.cells.get(label=1)
    # Into the cell and out again on the same side: it cuts nothing off.
    line = [[cell.min_row - 5, cell.min_col + 10], [(cell.min_row + cell.max_row) / 2, cell.min_col + 10]]
    response = owner_api.post(f"/api/cells/{cell.pk}/mask/split/", {"line": line}, format="json")
    assert response.status_code == 400
    assert response.json()["detail"] == (
        "The line does not cross cell 1 from one side to the other, so it cannot be split; "
        "draw the line right across the cell."
    )
    after = _state(processed_field)
    assert np.array_equal(after[0], before[0]) and after[1] == before[1]
    assert (MaskEdit.objects.count(), media_files()) == (0, files)


def test_annotations_detach_from_a_fixed_cell_and_come_back_when_the_fix_is_undone(processed_field, owner, owner_api):
    cell = processed_field.cells.get(label=1)
    other = processed_field.cells.get(label=3)
    for annotated in (cell, other):
        curation.annotations_create(user=owner, calls=[curation.CellCall(cell=annotated)], kind="classes", classes=[6])
    split = owner_api.post(f"/api/cells/{cell.pk}/mask/split/", {"line": _vertical_line(cell)}, format="json").json()
    linked = dict(CellAnnotation.objects.values_list("cell_label", "cell__label"))
    assert linked == {1: None, 3: 3}  # the split cell's annotation waits; the untouched cell keeps its own
    owner_api.post(f"/api/mask-edits/{split['id']}/undo/")
    assert dict(CellAnnotation.objects.values_list("cell_label", "cell__label")) == {1: 1, 3: 3}


def test_another_user_cannot_fix_or_undo(processed_field, owner_api, outsider_api):
    cell = processed_field.cells.get(label=2)
    assert outsider_api.post(f"/api/cells/{cell.pk}/mask/delete/").status_code == 404
    edit = owner_api.post(f"/api/cells/{cell.pk}/mask/delete/").json()
    assert outsider_api.post(f"/api/mask-edits/{edit['id']}/undo/").status_code == 404
    assert outsider_api.get(f"/api/fields/{processed_field.pk}/mask-edits/").status_code == 404


def test_every_fix_measures_and_flags_the_cells_again(processed_field, owner_api):
    first_measured = {cell.label: cell.measurements for cell in processed_field.cells.all()}
    assert all(first_measured.values())
    cell = processed_field.cells.get(label=1)
    split = owner_api.post(f"/api/cells/{cell.pk}/mask/split/", {"line": _vertical_line(cell)}, format="json")
    assert split.status_code == 201, split.json()
    for stored in processed_field.cells.all():
        assert stored.measurements, stored.label  # every cell of the field, the new ones too
        assert stored.measurements["area_px"] == stored.area_px
        assert stored.qc_flags is not None
    halves = processed_field.cells.filter(label__in=[1, 5])
    assert sum(half.measurements["area_px"] for half in halves) == first_measured[1]["area_px"]
    untouched = processed_field.cells.get(label=3)
    assert untouched.measurements == pytest.approx(first_measured[3], nan_ok=True)
