import numpy as np
import pytest

from ml.encoding import SubmissionRow, encode_kaggle_mask
from ml.evaluate import average_precision, score

SIDE_PX = 16


def block(top: int, left: int, height: int, width: int) -> str:
    mask = np.zeros((SIDE_PX, SIDE_PX), dtype=bool)
    mask[top : top + height, left : left + width] = True
    return encode_kaggle_mask(mask)


def first_pixels(count: int) -> str:
    """The first `count` pixels (row-major) of the 10 x 10 block at the origin."""
    mask = np.zeros((SIDE_PX, SIDE_PX), dtype=bool)
    inside = np.zeros((10, 10), dtype=bool)
    inside.ravel()[:count] = True
    mask[:10, :10] = inside
    return encode_kaggle_mask(mask)


CELL_A = block(0, 0, 4, 4)
CELL_B = block(8, 8, 4, 4)
CELL_C = block(0, 8, 4, 4)


def row(image_id: str, *triples: tuple[int, float, str]) -> SubmissionRow:
    text = " ".join(f"{label} {confidence} {mask}" for label, confidence, mask in triples)
    return SubmissionRow(image_id=image_id, width=SIDE_PX, height=SIDE_PX, prediction_string=text)


def test_perfect_prediction_scores_one():
    solution = [row("a", (0, 1, CELL_A), (5, 1, CELL_A), (16, 1, CELL_B))]
    submission = [row("a", (0, 0.9, CELL_A), (5, 0.8, CELL_A), (16, 0.7, CELL_B))]
    scores = score(solution, submission)
    assert scores.mAP == 1.0
    assert [label for label, ap in enumerate(scores.per_class_ap) if ap is not None] == [0, 5, 16]


def test_true_positive_ranked_above_false_positive_keeps_full_precision():
    # precision (1, 1/2) at recall (1, 1): the envelope at recall 1 is 1.
    solution = [row("a", (0, 1, CELL_A))]
    submission = [row("a", (0, 0.9, CELL_A), (0, 0.8, CELL_B))]
    scores = score(solution, submission)
    assert scores.per_class_ap[0] == 1.0
    assert (scores.true_positive_counts[0], scores.false_positive_counts[0]) == (1, 1)


def test_false_positive_ranked_above_true_positive_halves_ap():
    # precision (0, 1/2) at recall (0, 1): AP = 1 * 1/2.
    solution = [row("a", (0, 1, CELL_A))]
    submission = [row("a", (0, 0.9, CELL_B), (0, 0.8, CELL_A))]
    assert score(solution, submission).per_class_ap[0] == 0.5


def test_ap_uses_the_precision_envelope():
    # TP, FP, TP over 2 truths: precision (1, 1/2, 2/3), recall (1/2, 1/2, 1)
    # -> 1/2 * 1 + 1/2 * 2/3 = 5/6.
    solution = [row("a", (0, 1, CELL_A), (0, 1, CELL_B))]
    submission = [row("a", (0, 0.9, CELL_A), (0, 0.8, CELL_C), (0, 0.7, CELL_B))]
    assert score(solution, submission).per_class_ap[0] == pytest.approx(5 / 6)


def test_iou_of_exactly_the_threshold_matches_and_just_under_does_not():
    truth = [row("a", (0, 1, block(0, 0, 10, 10)))]
    assert score(truth, [row("a", (0, 0.9, first_pixels(60)))]).per_class_ap[0] == 1.0  # IoU 60/100
    assert score(truth, [row("a", (0, 0.9, first_pixels(59)))]).per_class_ap[0] == 0.0  # IoU 59/100


def test_label_absent_from_the_image_truth_is_ignored_not_a_false_positive():
    solution = [row("a", (0, 1, CELL_A)), row("b", (3, 1, CELL_A))]
    # Image a has no class 3: its confident class-3 prediction must not rank above b's true one.
    submission = [row("a", (0, 0.5, CELL_A), (3, 0.99, CELL_B)), row("b", (3, 0.1, CELL_A))]
    scores = score(solution, submission)
    assert scores.per_class_ap[3] == 1.0
    assert scores.false_positive_counts[3] == 0


def test_each_truth_is_matched_at_most_once():
    # The duplicate of cell A is a false positive: TP, FP, TP over 2 truths = 5/6.
    solution = [row("a", (0, 1, CELL_A), (0, 1, CELL_B))]
    submission = [row("a", (0, 0.9, CELL_A), (0, 0.8, CELL_A), (0, 0.7, CELL_B))]
    scores = score(solution, submission)
    assert scores.per_class_ap[0] == pytest.approx(5 / 6)
    assert scores.false_positive_counts[0] == 1


def test_classes_without_truth_are_left_out_of_the_mean():
    solution = [row("a", (0, 1, CELL_A), (2, 1, CELL_B))]
    submission = [row("a", (0, 0.9, CELL_A))]  # class 2 missed: AP 0
    scores = score(solution, submission)
    assert scores.per_class_ap[2] == 0.0
    assert sum(ap is not None for ap in scores.per_class_ap) == 2
    assert scores.mAP == 0.5


def test_image_missing_from_submission_costs_recall():
    solution = [row("a", (0, 1, CELL_A)), row("b", (0, 1, CELL_A))]
    submission = [row("a", (0, 0.9, CELL_A))]
    assert score(solution, submission).per_class_ap[0] == 0.5


def test_score_rejects_submission_with_wrong_image_size():
    solution = [row("a", (0, 1, CELL_A))]
    wrong = SubmissionRow(image_id="a", width=SIDE_PX, height=SIDE_PX + 1, prediction_string="")
    with pytest.raises(ValueError, match="ImageWidth and ImageHeight"):
        score(solution, [wrong])


def test_average_precision_without_detections_is_zero():
    assert average_precision([], [], 3) == 0.0
