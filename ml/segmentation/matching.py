"""Object-level agreement between two label images (F1 at an IoU threshold, matched IoU).

Overlaps come from one contingency table of (true id, predicted id) pixel pairs, so the cost is
one pass over the image however many objects there are.
"""

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment


@dataclass(frozen=True)
class LabelMatch:
    """How well predicted objects reproduce true objects at one IoU threshold."""

    iou_threshold: float
    true_count: int
    predicted_count: int
    matched_count: int
    mean_matched_iou: float  # over matched pairs; 0.0 when nothing matched

    @property
    def precision(self) -> float:
        return self.matched_count / self.predicted_count if self.predicted_count else 1.0

    @property
    def recall(self) -> float:
        return self.matched_count / self.true_count if self.true_count else 1.0

    @property
    def f1(self) -> float:
        # Nothing to find and nothing found is perfect agreement.
        total = self.true_count + self.predicted_count
        return 2 * self.matched_count / total if total else 1.0


def iou_table(true_labels: np.ndarray, predicted_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU of every (true, predicted) object pair: (true_ids (T,), predicted_ids (P,), iou (T, P))."""
    if true_labels.shape != predicted_labels.shape:
        raise ValueError(f"Label images differ in shape: true {true_labels.shape}, predicted {predicted_labels.shape}.")
    true_ids, true_index = _compact(true_labels)
    predicted_ids, predicted_index = _compact(predicted_labels)
    pair_index = true_index * len(predicted_ids) + predicted_index
    overlap = np.bincount(pair_index, minlength=len(true_ids) * len(predicted_ids))
    overlap = overlap.reshape(len(true_ids), len(predicted_ids))
    # Row and column sums are the object areas (background included, dropped below).
    union = overlap.sum(axis=1, keepdims=True) + overlap.sum(axis=0, keepdims=True) - overlap
    iou = overlap / np.maximum(union, 1)
    true_keep = true_ids != 0
    predicted_keep = predicted_ids != 0
    return true_ids[true_keep], predicted_ids[predicted_keep], iou[np.ix_(true_keep, predicted_keep)]


def _compact(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ids present (0 always first) and each pixel's index into them, flattened; O(pixels)."""
    if not np.issubdtype(labels.dtype, np.integer) or (labels.size and labels.min() < 0):
        raise ValueError(f"Label images must hold non-negative integers, got dtype {labels.dtype}.")
    flat = labels.ravel()
    present = np.bincount(flat, minlength=1) > 0
    present[0] = True
    ids = np.flatnonzero(present)
    lookup = np.zeros(len(present), dtype=np.int64)
    lookup[ids] = np.arange(len(ids))
    return ids, lookup[flat]


def match_labels(
    true_labels: np.ndarray,
    predicted_labels: np.ndarray,
    *,
    iou_threshold: float = 0.5,
    min_true_area_px: int = 0,
) -> LabelMatch:
    """Match objects one-to-one (most pairs with IoU >= threshold, then highest IoU).

    True objects smaller than `min_true_area_px` are ignored (specks in hand-drawn references).
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must lie in (0, 1], got {iou_threshold}.")
    if min_true_area_px > 0:
        areas = np.bincount(true_labels.ravel())
        small = np.flatnonzero(areas < min_true_area_px)
        true_labels = np.where(np.isin(true_labels, small), 0, true_labels)
    true_ids, predicted_ids, iou = iou_table(true_labels, predicted_labels)
    eligible = iou >= iou_threshold
    if eligible.any():
        # Each eligible pair is worth 1 plus a tie-break below 1 in total, so the assignment
        # maximises the number of matches first and their IoU second.
        score = eligible * (1.0 + iou / (min(iou.shape) + 1))
        rows, cols = linear_sum_assignment(score, maximize=True)
        matched = eligible[rows, cols]
        matched_ious = iou[rows[matched], cols[matched]]
    else:
        matched_ious = np.zeros(0)
    return LabelMatch(
        iou_threshold=iou_threshold,
        true_count=len(true_ids),
        predicted_count=len(predicted_ids),
        matched_count=len(matched_ious),
        mean_matched_iou=float(matched_ious.mean()) if len(matched_ious) else 0.0,
    )
