"""Labels and cells of training: the labels file, the split, per-cell targets and their refinement.

The crops themselves live in a cell store (`ml.training.store`, made once by `ml.training.prepare`:
segmenting and cropping a 2048 px field costs about a second on a CPU, far more than one training
step on its cells). A `CellTable` lists the cells of a set of fields, where every cell starts with
its field's image-level labels; training refines those per cell.
"""

import csv
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pycocotools import mask as coco_mask

from ml.constants import NEGATIVE_CLASS, NUM_CLASSES
from ml.encoding import SubmissionRow, kaggle_to_rle, labels_to_rles, parse_prediction_string
from ml.io import InputError, read_labels_png


@dataclass(frozen=True, eq=False)
class CellTable:
    """All cells of a set of fields; row i of every array is cell i."""

    image_ids: tuple[str, ...]  # one per field
    image_labels: np.ndarray  # float32 (F, 19) multi-hot image-level labels
    crops: np.ndarray | None  # uint8 (N, 4, S, S), or None when the crops stay in a cell store
    field_index: np.ndarray  # int64 (N,) row of image_ids / image_labels
    cell_ids: np.ndarray  # int64 (N,) id in the field's cached cell labels

    def __len__(self) -> int:
        return len(self.cell_ids)

    def inherited_targets(self) -> np.ndarray:
        """float32 (N, 19): every cell carries its field's labels (the weak-label start)."""
        return self.image_labels[self.field_index].copy()


def read_image_labels(csv_path: Path) -> dict[str, tuple[int, ...]]:
    """`ID,Label` rows (labels joined by `|`) -> {ID: sorted labels}."""
    if not csv_path.is_file():
        raise InputError(f"{csv_path} does not exist; a training folder needs a train.csv with columns ID,Label.")
    labels: dict[str, tuple[int, ...]] = {}
    with open(csv_path, newline="") as handle:
        reader = csv.DictReader(handle)
        if not {"ID", "Label"} <= set(reader.fieldnames or ()):
            raise InputError(f"{csv_path.name} must have the columns ID,Label (found {reader.fieldnames}).")
        for line_number, record in enumerate(reader, start=2):
            try:
                values = tuple(sorted({int(v) for v in record["Label"].split("|") if v.strip()}))
            except ValueError:
                raise InputError(
                    f"{csv_path.name} line {line_number}: Label {record['Label']!r} must be class numbers joined by '|'."
                ) from None
            if not values or any(not 0 <= v < NUM_CLASSES for v in values):
                raise InputError(
                    f"{csv_path.name} line {line_number}: labels must lie in 0..{NUM_CLASSES - 1}, got {record['Label']!r}."
                )
            labels[record["ID"]] = values
    return labels


def multi_hot(labels: Sequence[int]) -> np.ndarray:
    target = np.zeros(NUM_CLASSES, dtype=np.float32)
    target[list(labels)] = 1.0
    return target


def stratified_split(
    image_labels: dict[str, tuple[int, ...]], *, validation_fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """(train IDs, validation IDs): fields grouped by their rarest label, each group split alike.

    Grouping by the rarest label keeps rare classes (spindle, aggresome) in both parts, which a
    plain random split of a few hundred fields does not guarantee.
    """
    counts = np.zeros(NUM_CLASSES, dtype=np.int64)
    for labels in image_labels.values():
        counts[list(labels)] += 1
    groups: dict[int, list[str]] = {}
    for image_id in sorted(image_labels):
        rarest = min(image_labels[image_id], key=lambda label: (counts[label], label))
        groups.setdefault(rarest, []).append(image_id)
    rng = np.random.default_rng(seed)
    train, validation = [], []
    for rarest in sorted(groups):
        members = list(rng.permutation(groups[rarest]))
        take = int(round(validation_fraction * len(members)))
        if validation_fraction > 0 and take == 0 and len(members) >= 3:
            take = 1
        validation += members[:take]
        train += members[take:]
    return sorted(train), sorted(validation)


def refine_targets(
    table: CellTable, probabilities: np.ndarray, *, keep_fraction: float = 0.5, min_probability: float = 0.1
) -> np.ndarray:
    """Per-cell targets from the model's own predictions, restricted to each field's labels.

    A cell keeps an image label when its probability for it is at least `keep_fraction` of the
    highest probability any cell of the field has for that label (so the field's most
    convincing cell always keeps it) and at least `min_probability`. A cell that keeps none of
    its field's labels shows no specific signal and becomes Negative.
    """
    image_targets = table.inherited_targets()
    candidate = probabilities * image_targets  # only labels the field has can be kept
    field_best = np.zeros_like(table.image_labels)
    np.maximum.at(field_best, table.field_index, candidate)
    threshold = np.maximum(keep_fraction * field_best[table.field_index], min_probability)
    targets = ((candidate >= threshold) & (image_targets > 0)).astype(np.float32)
    # The field's most convincing cell keeps each label even when all are below min_probability.
    best_cell = candidate >= field_best[table.field_index]
    targets = np.maximum(targets, (best_cell & (image_targets > 0)).astype(np.float32))
    targets[targets.sum(axis=1) == 0, NEGATIVE_CLASS] = 1.0
    return targets


def truth_targets(
    table: CellTable,
    solution: dict[str, SubmissionRow],
    *,
    cell_labels_of: Callable[[str], np.ndarray] | None = None,
    cache_dir: Path | None = None,
    min_iou: float = 0.5,
) -> np.ndarray:
    """Per-cell targets from true cell labels (a solution CSV): each segmented cell takes the
    classes of the true cell it overlaps with IoU >= `min_iou`; cells without such a match get
    all-NaN rows, which training skips. IoUs come from the RLEs, without decoding full masks.
    A field's segmentation comes from `cell_labels_of(ID)` (a cell store's `read_cell_labels`), or
    from `cache_dir/masks/{ID}_cells.png`.
    """
    if cell_labels_of is None:

        def cell_labels_of(image_id: str) -> np.ndarray:
            return read_labels_png(Path(cache_dir) / "masks" / f"{image_id}_cells.png")

    targets = np.full((len(table), NUM_CLASSES), np.nan, dtype=np.float32)
    for row, image_id in enumerate(table.image_ids):
        truth = solution[image_id]
        classes: dict[str, set[int]] = {}
        for label, _confidence, mask_text in parse_prediction_string(truth.prediction_string):
            classes.setdefault(mask_text, set()).add(label)
        cells = np.flatnonzero(table.field_index == row)
        if not classes or len(cells) == 0:
            continue
        true_masks = list(classes)
        true_rles = [_bytes_rle(kaggle_to_rle(m, height=truth.height, width=truth.width)) for m in true_masks]
        segmented = labels_to_rles(cell_labels_of(image_id))
        cell_rles = [_bytes_rle(segmented[int(cell_id)]) for cell_id in table.cell_ids[cells]]
        iou = np.asarray(coco_mask.iou(cell_rles, true_rles, [0] * len(true_rles))).reshape(len(cells), len(true_rles))
        best = iou.argmax(axis=1)
        for cell, column, overlap in zip(cells, best, iou[np.arange(len(cells)), best], strict=True):
            if overlap >= min_iou:
                targets[cell] = multi_hot(sorted(classes[true_masks[column]]))
    return targets


def _bytes_rle(rle: dict) -> dict:
    return {"size": rle["size"], "counts": rle["counts"].encode("ascii")}


def stratified_cell_split(targets: np.ndarray, *, validation_fraction: float, seed: int) -> np.ndarray:
    """Positions (into `targets`, cells' own multi-hot classes) of the cells to hold out for validation:
    cells grouped by their rarest class, the same fraction of every group (at least one of a group of 3
    or more), so each class that can be validated is."""
    if validation_fraction <= 0 or len(targets) == 0:
        return np.zeros(0, dtype=np.int64)
    positive = targets > 0
    counts = positive.sum(axis=0)
    rarest = np.where(positive, counts[None, :], np.iinfo(np.int64).max).argmin(axis=1)
    rng = np.random.default_rng(seed)
    held = []
    for label in np.unique(rarest):
        members = rng.permutation(np.flatnonzero(rarest == label))
        take = int(round(validation_fraction * len(members)))
        if take == 0 and len(members) >= 3:
            take = 1
        held.append(members[:take])
    return np.sort(np.concatenate(held)).astype(np.int64)


def class_balanced_weights(targets: np.ndarray, *, power: float = 0.5) -> np.ndarray:
    """Sampling weight per row: the inverse frequency (to `power`) of its rarest positive class."""
    positive = targets > 0
    counts = positive.sum(axis=0).astype(np.float64)
    inverse = np.where(counts > 0, 1.0 / np.maximum(counts, 1.0) ** power, 0.0)
    weights = np.zeros(len(targets), dtype=np.float64)
    for label in range(targets.shape[1]):  # class by class: memory stays one number per row
        np.maximum(weights, np.where(positive[:, label], inverse[label], 0.0), out=weights)
    return weights


def describe_fields(image_ids: Sequence[str]) -> str:
    """A short fingerprint of a set of field IDs, recorded in checkpoints."""
    return hashlib.sha256("\n".join(sorted(image_ids)).encode()).hexdigest()[:16]
