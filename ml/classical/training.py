"""Training a classical classifier from a Kaggle-layout training folder (the one `python -m ml train` reads).

Cells are the segmenter's (each inherits its field's image labels from train.csv), or with
`cell_labels_from_truth` the true cells of a synthetic folder (`truth/{ID}_cells.png`) with their
classes from `solution.csv`. Only cells with exactly one label train the classifier: the seed's
classifiers are single-label, and a cell of several classes has no one answer.
"""

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ml.classical.classifier import ESTIMATORS, ClassicalModel
from ml.classical.features import crop_features
from ml.constants import NUM_CLASSES
from ml.crops import crop_cells
from ml.encoding import labels_to_rles, parse_prediction_string, read_submission, rle_to_kaggle
from ml.io import InputError, find_fields, read_field, read_labels_png
from ml.measure.texture import TEXTURE_SIZE_PX
from ml.segmentation import Segmenter


@dataclass(frozen=True, eq=False)
class LabelledCells:
    """Crops of cells with their labels; row i of both is cell i."""

    crops: np.ndarray  # float32 (N, 4, S, S)
    labels: list[tuple[int, ...]]  # each cell's classes
    field_ids: list[str]


def read_image_labels(csv_path: Path) -> dict[str, tuple[int, ...]]:
    """train.csv (`ID,Label`, labels joined by |) -> {ID: labels}."""
    if not csv_path.is_file():
        raise InputError(f"{csv_path} does not exist; a training folder needs a train.csv with columns ID,Label.")
    with open(csv_path, newline="") as handle:
        reader = csv.DictReader(handle)
        if not {"ID", "Label"} <= set(reader.fieldnames or ()):
            raise InputError(f"{csv_path.name} must have the columns ID,Label (found {reader.fieldnames}).")
        labels = {}
        for line, record in enumerate(reader, start=2):
            try:
                values = tuple(sorted({int(part) for part in record["Label"].split("|") if part.strip()}))
            except ValueError:
                raise InputError(
                    f"{csv_path.name} line {line}: Label {record['Label']!r} must be class numbers."
                ) from None
            if any(not 0 <= value < NUM_CLASSES for value in values):
                raise InputError(f"{csv_path.name} line {line}: labels must lie in 0..{NUM_CLASSES - 1}.")
            labels[record["ID"]] = values
    return labels


def gather_cells(
    data_dir: Path,
    *,
    segmenter: Segmenter | None,
    cell_labels_from_truth: bool = False,
    max_fields: int | None = None,
    progress: Callable[[Sequence[str]], Sequence[str]] = lambda ids: ids,
) -> LabelledCells:
    """Every cell of the folder's fields, cropped at `TEXTURE_SIZE_PX`, with its labels."""
    image_labels = read_image_labels(data_dir / "train.csv")
    fields = find_fields(data_dir)
    image_ids = [image_id for image_id in image_labels if image_id in fields][:max_fields]
    if not image_ids:
        raise InputError(f"No field of {data_dir / 'train.csv'} has image files in {data_dir}.")
    solution = (
        {row.image_id: row for row in read_submission(data_dir / "solution.csv")} if cell_labels_from_truth else {}
    )
    crops, labels, field_ids = [], [], []
    for image_id in progress(image_ids):
        field = read_field(fields[image_id])
        if cell_labels_from_truth:
            cell_labels = read_labels_png(data_dir / "truth" / f"{image_id}_cells.png")
            classes = _truth_classes(cell_labels, solution[image_id].prediction_string)
        else:
            cell_labels = segmenter(field).cell_labels
            classes = None
        cropped = crop_cells(field.stack(), cell_labels, size_px=TEXTURE_SIZE_PX)
        for cell_id in cropped.cell_ids:
            labels.append(classes.get(int(cell_id), ()) if classes is not None else image_labels[image_id])
            field_ids.append(image_id)
        crops.append(cropped.images)
    return LabelledCells(crops=np.concatenate(crops), labels=labels, field_ids=field_ids)


def _truth_classes(cell_labels: np.ndarray, prediction_string: str) -> dict[int, tuple[int, ...]]:
    by_mask: dict[str, set[int]] = {}
    for label, _confidence, mask in parse_prediction_string(prediction_string):
        by_mask.setdefault(mask, set()).add(label)
    return {
        cell_id: tuple(sorted(by_mask.get(rle_to_kaggle(rle), ())))
        for cell_id, rle in labels_to_rles(cell_labels).items()
    }


def build_estimator(kind: str, *, seed: int = 0):
    """A fresh scikit-learn pipeline: standardised features, then a cubic-kernel SVM (Platt-calibrated
    probabilities) or a random forest of 300 trees."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    if kind not in ESTIMATORS:
        raise ValueError(f"Unknown estimator {kind!r}; choose one of {', '.join(ESTIMATORS)}.")
    if kind == "svm":
        svm = SVC(kernel="poly", degree=3, C=10.0, gamma="scale", coef0=1.0, random_state=seed)
        return make_pipeline(StandardScaler(), CalibratedClassifierCV(svm, ensemble=False, cv=3))
    return make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=300, n_jobs=1, random_state=seed))


def train_classical(cells: LabelledCells, *, kind: str, feature_set: str, name: str, seed: int = 0) -> ClassicalModel:
    """Fit the estimator on the single-label cells' features; the training accuracy goes in its metrics."""
    single = [index for index, labels in enumerate(cells.labels) if len(labels) == 1]
    if len(single) < 10:
        raise InputError(
            f"Only {len(single)} cell(s) have exactly one label; a classical classifier needs at least 10. "
            "Add fields with a single label to train.csv, or use --cell-labels-from-truth on synthetic data."
        )
    targets = np.array([cells.labels[index][0] for index in single])
    classes = np.unique(targets)
    if len(classes) < 2:
        raise InputError("All single-label cells have the same class; a classifier needs at least two classes.")
    features = crop_features(cells.crops[single], feature_set)
    estimator = build_estimator(kind, seed=seed)
    estimator.fit(features, targets)
    accuracy = float(np.mean(estimator.predict(features) == targets))
    return ClassicalModel(
        estimator=estimator,
        estimator_kind=kind,
        feature_set=feature_set,
        classes=tuple(int(label) for label in estimator.classes_),
        name=name,
        version="1",
        summary=f"A classical baseline ({kind} on {feature_set} texture features); trained on "
        f"{len(single)} single-label cells, not validated on real images.",
        metrics={"train_accuracy": round(accuracy, 4)},
        data={"cells": len(single), "fields": len(set(cells.field_ids)), "classes": [int(c) for c in classes]},
    )
