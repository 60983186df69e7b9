"""Mask fixes on a processed field: delete a cell, merge two touching cells, split a cell along a line.

A fix edits the field's full-resolution label images (cell i holds nucleus i) and then runs the
rest of the field's processing on them as a new segmentation: RLEs, crops and the field's
classifier (`ml.pipeline.analyse_field` with the edited labels in place of a segmenter), viewer
pictures, label images and thumbnails (`cells.processing.field_store_result`), so every page and
export follows. The label images from before the fix are kept on its `MaskEdit` row; undoing the
field's latest fix restores them the same way. Annotations follow their cells
(`cells.curation.annotations_relink`).

Bad input changes nothing: merging cells that do not touch, a split line that does not cross the
cell from one side to the other, a fix on a field that is not done.
"""

import io

import numpy as np
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone
from scipy import ndimage

from cells import ml_config, processing
from cells.curation import annotations_relink
from cells.files import field_file_save
from cells.models import Cell, Field, MaskEdit
from ml.io import read_labels_png, write_labels_png
from ml.pipeline import analyse_field
from ml.segmentation import Segmentation

# Each part of a split keeps at least this share of the cell (a line grazing an edge is not a split).
MIN_SPLIT_PART_SHARE = 0.05
MAX_LABEL = 65535


def _labels(stored) -> np.ndarray:
    with stored.open("rb") as handle:
        return read_labels_png(handle)


def _png(labels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    write_labels_png(buffer, labels)
    return buffer.getvalue()


def _check_done(field: Field) -> None:
    if field.status != Field.Status.DONE or not field.cell_labels:
        raise ValidationError(f"Field {field.name} is not done yet; fix its masks once it is processed.")


def _rebuild(field: Field, *, cell_labels: np.ndarray, nuclei_labels: np.ndarray) -> None:
    """Everything the field stores, made again from edited label images."""
    images = processing.read_stored_field(field)
    segmentation = Segmentation(
        nuclei_labels=nuclei_labels.astype(np.uint16),
        cell_labels=cell_labels.astype(np.uint16),
        backend=field.segmentation_backend,
        channels_used=tuple(field.channels_used),
    )
    classifier = field.classifier
    result = analyse_field(
        images,
        segmenter=lambda _images: segmentation,
        predictor=ml_config.get_classifier(classifier) if classifier is not None else None,
        measure=ml_config.measure_options(),  # the cells' measurements and flags follow the fix
        viewer=True,
    )
    del images
    processing.field_store_result(field=field, result=result, classifier=classifier)
    field.refresh_from_db()
    annotations_relink(field=field)


def _record(field: Field, *, kind: str, user: AbstractBaseUser, details: dict, cells, nuclei) -> MaskEdit:
    edit = MaskEdit(field=field, kind=kind, author=user, details=details)
    stamp = timezone.now().strftime("%Y%m%d%H%M%S%f")
    field_file_save(edit.cell_labels_before, f"{stamp}_cells.png", ContentFile(_png(cells)))
    field_file_save(edit.nuclei_labels_before, f"{stamp}_nuclei.png", ContentFile(_png(nuclei)))
    edit.save()
    return edit


def _owned(cell: Cell, user: AbstractBaseUser) -> Field:
    field = Field.objects.select_related("job").get(pk=cell.field_id)
    if field.job.owner_id != user.pk:
        raise ValidationError("Only the owner of a job fixes its masks.")
    _check_done(field)
    return field


@transaction.atomic
def cell_delete(*, user: AbstractBaseUser, cell: Cell) -> MaskEdit:
    """Remove a cell (and its nucleus) from the field."""
    field = _owned(cell, user)
    cells, nuclei = _labels(field.cell_labels), _labels(field.nuclei_labels)
    edited_cells, edited_nuclei = cells.copy(), nuclei.copy()
    edited_cells[cells == cell.label] = 0
    edited_nuclei[nuclei == cell.label] = 0
    edit = _record(
        field, kind=MaskEdit.Kind.DELETE, user=user, details={"cells": [cell.label]}, cells=cells, nuclei=nuclei
    )
    _rebuild(field, cell_labels=edited_cells, nuclei_labels=edited_nuclei)
    return edit


@transaction.atomic
def cells_merge(*, user: AbstractBaseUser, first: Cell, second: Cell) -> MaskEdit:
    """Join two touching cells of one field into one, which keeps the smaller id (and both nuclei)."""
    if first.field_id != second.field_id:
        raise ValidationError("Only cells of the same field can be merged.")
    if first.label == second.label:
        raise ValidationError("Choose two different cells to merge.")
    field = _owned(first, user)
    cells, nuclei = _labels(field.cell_labels), _labels(field.nuclei_labels)
    grown = ndimage.binary_dilation(cells == first.label, structure=np.ones((3, 3), bool))
    if not (grown & (cells == second.label)).any():
        raise ValidationError(
            f"Cells {first.label} and {second.label} do not touch, so they cannot be merged; "
            "merge only neighbouring cells that are really one."
        )
    kept, gone = sorted((first.label, second.label))
    edited_cells, edited_nuclei = cells.copy(), nuclei.copy()
    edited_cells[cells == gone] = kept
    edited_nuclei[nuclei == gone] = kept
    edit = _record(
        field,
        kind=MaskEdit.Kind.MERGE,
        user=user,
        details={"cells": [kept, gone], "kept": kept},
        cells=cells,
        nuclei=nuclei,
    )
    _rebuild(field, cell_labels=edited_cells, nuclei_labels=edited_nuclei)
    return edit


def _line_mask(shape: tuple[int, int], points: list[tuple[float, float]]) -> np.ndarray:
    """The pixels of a polyline through (row, col) points, 3 px wide so the parts cannot touch diagonally."""
    mask = np.zeros(shape, dtype=bool)
    for (r0, c0), (r1, c1) in zip(points, points[1:], strict=False):
        steps = int(max(abs(r1 - r0), abs(c1 - c0)) * 2) + 2
        rows = np.clip(np.round(np.linspace(r0, r1, steps)).astype(int), 0, shape[0] - 1)
        cols = np.clip(np.round(np.linspace(c0, c1, steps)).astype(int), 0, shape[1] - 1)
        mask[rows, cols] = True
    return ndimage.binary_dilation(mask, structure=np.ones((3, 3), bool))


@transaction.atomic
def cell_split(*, user: AbstractBaseUser, cell: Cell, points: list[tuple[float, float]]) -> MaskEdit:
    """Cut a cell in two along a line (field pixels, (row, col) points). The larger part keeps the
    cell's id, the other gets a new one; the line's pixels go to the part they touch most."""
    if len(points) < 2:
        raise ValidationError("A split line needs at least two points.")
    if not all(np.isfinite(value) for point in points for value in point):
        raise ValidationError("The split line's points must be numbers (field pixels, row and column).")
    field = _owned(cell, user)
    # Points beyond the field are brought to its edge: the line can only cut what lies inside it.
    points = [(min(max(float(r), -1.0), field.height), min(max(float(c), -1.0), field.width)) for r, c in points]
    cells, nuclei = _labels(field.cell_labels), _labels(field.nuclei_labels)
    inside = cells == cell.label
    line = _line_mask(cells.shape, [(float(r), float(c)) for r, c in points])
    parts, count = ndimage.label(inside & ~line)
    areas = np.bincount(parts.ravel())[1:] if count else np.zeros(0, int)
    big = [index + 1 for index in np.argsort(-areas) if areas[index] >= MIN_SPLIT_PART_SHARE * inside.sum()]
    if len(big) < 2:
        raise ValidationError(
            f"The line does not cross cell {cell.label} from one side to the other, so it cannot be split; "
            "draw the line right across the cell."
        )
    new_label = int(cells.max()) + 1
    if new_label > MAX_LABEL:
        raise ValidationError("This field has too many cell ids left to add another; delete a cell first.")
    second_part = parts == big[1]
    # Everything else of the cell (the line, slivers, the remaining parts) goes to the nearer of the two parts.
    rest = inside & ~second_part & (parts != big[0])
    to_second = rest & (
        ndimage.distance_transform_edt(~second_part) < ndimage.distance_transform_edt(~(parts == big[0]))
    )
    second_part |= to_second
    edited_cells, edited_nuclei = cells.copy(), nuclei.copy()
    edited_cells[second_part] = new_label
    edited_nuclei[(nuclei == cell.label) & second_part] = new_label
    edit = _record(
        field,
        kind=MaskEdit.Kind.SPLIT,
        user=user,
        details={"cells": [cell.label, new_label], "line": [[float(r), float(c)] for r, c in points]},
        cells=cells,
        nuclei=nuclei,
    )
    _rebuild(field, cell_labels=edited_cells, nuclei_labels=edited_nuclei)
    return edit


@transaction.atomic
def mask_edit_undo(*, user: AbstractBaseUser, edit: MaskEdit) -> MaskEdit:
    """Put the field's label images back as they were before its latest fix, and remake the rest."""
    field = Field.objects.select_for_update().select_related("job").get(pk=edit.field_id)
    if field.job.owner_id != user.pk:
        raise ValidationError("Only the owner of a job undoes its mask fixes.")
    edit.refresh_from_db()
    if edit.undone_at is not None:
        raise ValidationError("This mask fix was undone already.")
    latest = field.mask_edits.filter(undone_at__isnull=True).order_by("-created_at", "-id").first()
    if latest is not None and latest.pk != edit.pk:
        raise ValidationError("Undo the field's later mask fixes first; fixes are undone newest first.")
    _check_done(field)
    _rebuild(field, cell_labels=_labels(edit.cell_labels_before), nuclei_labels=_labels(edit.nuclei_labels_before))
    edit.undone_at = timezone.now()
    edit.save(update_fields=["undone_at"])
    return edit
