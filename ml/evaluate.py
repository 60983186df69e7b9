"""The competition metric: mean over classes of average precision at mask IoU 0.6.

Open Images instance-segmentation rules, as the HPA single-cell competition used them:
- a ground-truth instance is one (cell mask, label) pair of the solution; a prediction is one
  (mask, label, confidence) triple of the submission;
- within an image and a class, predictions are taken by decreasing confidence; each is a true
  positive when its IoU with a still-unmatched ground-truth cell of that class is >= 0.6 (the
  best such cell is taken), otherwise a false positive, so each ground truth is matched once;
- a predicted label that is not among the image's ground-truth labels is ignored for that
  image (neither true nor false positive);
- per class, the detections of all images are ranked by confidence (ties keep submission
  order), and AP is the area under the precision envelope (precision made monotonically
  non-increasing, summed over the recall steps), as Open Images' `compute_average_precision`;
- a class without any ground truth in the solution has no AP (Open Images gives NaN) and is
  left out of the mean; a class with ground truth but no prediction has AP 0.

`python -m ml evaluate` (`ml.cli.evaluate`) prints these scores per class and, on its last
line, `mAP=0.xxxx`.
"""

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as coco_mask

from ml.constants import CLASS_NAMES, NUM_CLASSES
from ml.encoding import SubmissionRow, kaggle_to_rle, parse_prediction_string

IOU_THRESHOLD = 0.6


@dataclass(frozen=True)
class Scores:
    """Per-class AP (None where the solution has no instance of the class) and their mean."""

    per_class_ap: tuple[float | None, ...]
    mAP: float  # noqa: N815 - the metric's own name
    ground_truth_counts: tuple[int, ...]
    true_positive_counts: tuple[int, ...]
    false_positive_counts: tuple[int, ...]


def average_precision(confidences: Sequence[float], is_true_positive: Sequence[bool], ground_truth_count: int) -> float:
    """Open Images AP of one class from all its scored detections and its ground-truth count."""
    if ground_truth_count == 0:
        raise ValueError("Average precision is undefined for a class without ground truth.")
    confidences = np.asarray(confidences, dtype=np.float64)
    if confidences.size == 0:
        return 0.0
    order = np.argsort(-confidences, kind="stable")
    hits = np.asarray(is_true_positive, dtype=bool)[order]
    true_positives = np.cumsum(hits)
    false_positives = np.cumsum(~hits)
    precision = true_positives / (true_positives + false_positives)
    recall = true_positives / ground_truth_count
    recall = np.concatenate([[0.0], recall, [1.0]])
    precision = np.concatenate([[0.0], precision, [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # the precision envelope
    steps = np.flatnonzero(recall[1:] != recall[:-1]) + 1
    return float(np.sum((recall[steps] - recall[steps - 1]) * precision[steps]))


def score(
    solution_rows: Sequence[SubmissionRow],
    submission_rows: Sequence[SubmissionRow],
    *,
    iou_threshold: float = IOU_THRESHOLD,
) -> Scores:
    """Score a submission against a solution (both in the Kaggle submission format)."""
    predictions_by_image: dict[str, SubmissionRow] = {}
    for row in submission_rows:
        if row.image_id in predictions_by_image:
            raise ValueError(f"The submission has two rows for image {row.image_id!r}; keep one row per image.")
        predictions_by_image[row.image_id] = row

    ground_truth_counts = np.zeros(NUM_CLASSES, dtype=np.int64)
    detections: dict[int, tuple[list[float], list[bool]]] = defaultdict(lambda: ([], []))
    for truth_row in solution_rows:
        truth = parse_prediction_string(truth_row.prediction_string)
        for label, _confidence, _mask in truth:
            ground_truth_counts[_check_label(label, truth_row.image_id)] += 1
        prediction_row = predictions_by_image.get(truth_row.image_id)
        if prediction_row is None:
            continue
        if (prediction_row.width, prediction_row.height) != (truth_row.width, truth_row.height):
            raise ValueError(
                f"Image {truth_row.image_id!r} is {truth_row.width} x {truth_row.height} px in the solution but "
                f"{prediction_row.width} x {prediction_row.height} px in the submission; masks are decoded with "
                "ImageWidth and ImageHeight, so write the true size."
            )
        predictions = parse_prediction_string(prediction_row.prediction_string)
        for label, confidence, hit in _match_image(truth, predictions, truth_row, iou_threshold):
            detections[label][0].append(confidence)
            detections[label][1].append(hit)

    per_class_ap: list[float | None] = []
    true_positive_counts, false_positive_counts = [], []
    for label in range(NUM_CLASSES):
        confidences, hits = detections[label]
        true_positive_counts.append(int(sum(hits)))
        false_positive_counts.append(len(hits) - int(sum(hits)))
        count = int(ground_truth_counts[label])
        per_class_ap.append(average_precision(confidences, hits, count) if count else None)
    scored = [ap for ap in per_class_ap if ap is not None]
    return Scores(
        per_class_ap=tuple(per_class_ap),
        mAP=float(np.mean(scored)) if scored else 0.0,
        ground_truth_counts=tuple(int(c) for c in ground_truth_counts),
        true_positive_counts=tuple(true_positive_counts),
        false_positive_counts=tuple(false_positive_counts),
    )


def _check_label(label: int, image_id: str) -> int:
    if not 0 <= label < NUM_CLASSES:
        raise ValueError(f"Image {image_id!r} has label {label}; labels run from 0 to {NUM_CLASSES - 1}.")
    return label


def _match_image(
    truth: list[tuple[int, float, str]],
    predictions: list[tuple[int, float, str]],
    row: SubmissionRow,
    iou_threshold: float,
) -> list[tuple[int, float, bool]]:
    """(label, confidence, is true positive) of every prediction whose label the image has."""
    truth_labels = {label for label, _confidence, _mask in truth}
    predictions = [p for p in predictions if _check_label(p[0], row.image_id) in truth_labels]
    if not predictions:
        return []
    # One IoU per distinct (prediction mask, truth mask): the same cell appears once per label.
    truth_masks = sorted({mask for _label, _confidence, mask in truth})
    predicted_masks = sorted({mask for _label, _confidence, mask in predictions})
    truth_index = {mask: i for i, mask in enumerate(truth_masks)}
    predicted_index = {mask: i for i, mask in enumerate(predicted_masks)}
    iou = coco_mask.iou(
        [_coco_rle(mask, row) for mask in predicted_masks],
        [_coco_rle(mask, row) for mask in truth_masks],
        [0] * len(truth_masks),
    )
    iou = np.asarray(iou, dtype=np.float64).reshape(len(predicted_masks), len(truth_masks))

    results = []
    for label in sorted({p[0] for p in predictions}):
        candidates = np.array([truth_index[mask] for truth_label, _c, mask in truth if truth_label == label])
        matched = np.zeros(len(candidates), dtype=bool)
        ranked = sorted((p for p in predictions if p[0] == label), key=lambda p: -p[1])  # stable on ties
        for _label, confidence, mask in ranked:
            overlaps = np.where(matched, -1.0, iou[predicted_index[mask], candidates])
            best = int(np.argmax(overlaps))
            hit = bool(overlaps[best] >= iou_threshold)
            matched[best] |= hit
            results.append((label, confidence, hit))
    return results


def _coco_rle(mask_text: str, row: SubmissionRow) -> dict:
    try:
        rle = kaggle_to_rle(mask_text, height=row.height, width=row.width)
    except ValueError as error:
        raise ValueError(f"Image {row.image_id!r}: {error}") from None
    return {"size": rle["size"], "counts": rle["counts"].encode("ascii")}


def format_scores(scores: Scores) -> str:
    """One line per class (AP, ground-truth count, TP, FP), then `mAP=...` as the last line."""
    lines = [f"{'class':<44} {'AP':>7} {'GT':>6} {'TP':>6} {'FP':>6}"]
    for label, ap in enumerate(scores.per_class_ap):
        shown = "   n/a" if ap is None else f"{ap:7.4f}"
        lines.append(
            f"{label:>2} {CLASS_NAMES[label]:<41} {shown:>7} {scores.ground_truth_counts[label]:>6} "
            f"{scores.true_positive_counts[label]:>6} {scores.false_positive_counts[label]:>6}"
        )
    lines.append(f"mAP={scores.mAP:.4f}")
    return "\n".join(lines)
