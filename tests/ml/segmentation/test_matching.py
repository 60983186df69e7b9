import numpy as np
import pytest

from ml.segmentation.matching import iou_table, match_labels


def strip(*runs: tuple[int, int, int], width: int = 20) -> np.ndarray:
    """A (1, width) label image; each run is (label, first column, last column)."""
    labels = np.zeros((1, width), dtype=np.uint16)
    for label, first, last in runs:
        labels[0, first : last + 1] = label
    return labels


def test_identical_label_images_match_perfectly():
    labels = strip((1, 0, 4), (2, 6, 9), (3, 12, 19))
    match = match_labels(labels, labels)
    assert (match.true_count, match.predicted_count, match.matched_count) == (3, 3, 3)
    assert match.f1 == 1.0
    assert match.mean_matched_iou == 1.0


def test_iou_table_lists_every_pair_by_id():
    true = strip((1, 0, 9), (5, 10, 19))
    predicted = strip((7, 5, 14))
    true_ids, predicted_ids, iou = iou_table(true, predicted)
    assert true_ids.tolist() == [1, 5]
    assert predicted_ids.tolist() == [7]
    assert iou[:, 0] == pytest.approx([5 / 15, 5 / 15])


def test_shifted_object_matches_with_its_iou_only_above_the_threshold():
    true = np.zeros((10, 20), dtype=np.uint16)
    true[:, 0:10] = 1
    predicted = np.zeros_like(true)
    predicted[:, 2:12] = 4  # overlap 80 px, union 120 px
    assert match_labels(true, predicted, iou_threshold=0.5).mean_matched_iou == pytest.approx(2 / 3)
    missed = match_labels(true, predicted, iou_threshold=0.7)
    assert (missed.matched_count, missed.f1, missed.mean_matched_iou) == (0, 0.0, 0.0)


def test_one_prediction_covering_two_objects_matches_at_most_one():
    true = strip((1, 0, 5), (2, 6, 19))
    predicted = strip((1, 0, 19))
    match = match_labels(true, predicted)
    assert (match.matched_count, match.precision, match.recall) == (1, 1.0, 0.5)
    assert match.f1 == pytest.approx(2 / 3)
    assert match.mean_matched_iou == pytest.approx(14 / 20)


def test_match_labels_maximises_the_number_of_matches_below_iou_half():
    # P overlaps A best (7/13) but is B's only partner (3/17); Q overlaps only A (3/10).
    # Pairing P with A would leave two objects unmatched.
    true = strip((1, 0, 9), (2, 10, 19))
    predicted = strip((8, 3, 12), (9, 0, 2))
    match = match_labels(true, predicted, iou_threshold=0.15)
    assert match.matched_count == 2
    assert match.mean_matched_iou == pytest.approx((3 / 17 + 3 / 10) / 2)


def test_true_objects_below_the_minimum_area_are_ignored():
    true = strip((1, 0, 9), (2, 15, 16))
    predicted = strip((3, 0, 9))
    match = match_labels(true, predicted, min_true_area_px=3)
    assert (match.true_count, match.matched_count, match.f1) == (1, 1, 1.0)


def test_two_empty_label_images_agree():
    empty = np.zeros((4, 4), dtype=np.uint16)
    match = match_labels(empty, empty)
    assert (match.true_count, match.predicted_count, match.f1, match.mean_matched_iou) == (0, 0, 1.0, 0.0)


def test_match_labels_rejects_images_of_different_shapes():
    with pytest.raises(ValueError, match=r"differ in shape: true \(4, 4\), predicted \(4, 5\)"):
        match_labels(np.zeros((4, 4), dtype=np.uint16), np.zeros((4, 5), dtype=np.uint16))


def test_match_labels_rejects_non_integer_labels():
    with pytest.raises(ValueError, match="non-negative integers, got dtype float32"):
        match_labels(np.zeros((4, 4), dtype=np.float32), np.zeros((4, 4), dtype=np.uint16))


def test_match_labels_rejects_thresholds_outside_zero_to_one():
    labels = strip((1, 0, 4))
    with pytest.raises(ValueError, match=r"iou_threshold must lie in \(0, 1\], got 0"):
        match_labels(labels, labels, iou_threshold=0)
