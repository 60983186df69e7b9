import numpy as np
import pytest

from ml.constants import NEGATIVE_CLASS, NUM_CLASSES
from ml.encoding import SubmissionRow, encode_kaggle_mask
from ml.io import InputError, write_labels_png
from ml.training.data import (
    class_balanced_weights,
    multi_hot,
    read_image_labels,
    refine_targets,
    stratified_split,
    truth_targets,
)
from tests.ml.training.support import table_of


def test_read_image_labels_parses_pipe_joined_labels(tmp_path):
    (tmp_path / "train.csv").write_text("ID,Label\na,8|5|0\nb,18\n")
    assert read_image_labels(tmp_path / "train.csv") == {"a": (0, 5, 8), "b": (18,)}


def test_read_image_labels_rejects_a_class_out_of_range(tmp_path):
    (tmp_path / "train.csv").write_text("ID,Label\na,19\n")
    with pytest.raises(InputError, match="line 2"):
        read_image_labels(tmp_path / "train.csv")


def test_stratified_split_puts_a_rare_label_in_both_parts():
    labels = {f"common{i:02d}": (0,) for i in range(40)}
    labels.update({f"rare{i}": (0, 11) for i in range(4)})
    train_ids, val_ids = stratified_split(labels, validation_fraction=0.25, seed=0)
    assert sorted(train_ids + val_ids) == sorted(labels)
    assert sum(i.startswith("rare") for i in val_ids) == 1
    assert sum(i.startswith("common") for i in val_ids) == 10


def test_refine_targets_keeps_a_label_only_on_cells_that_show_it():
    table = table_of([(0, 16), (14,)], [3, 2])
    probabilities = np.zeros((5, NUM_CLASSES), dtype=np.float32)
    probabilities[:3, 0] = [0.9, 0.5, 0.3]  # 0.3 < half of the field's best 0.9
    probabilities[:3, 16] = [0.05, 0.8, 0.02]
    probabilities[:3, 5] = 0.99  # not a label of the field: never kept
    probabilities[3:, 14] = [0.04, 0.03]  # below min_probability: the best cell still keeps it
    targets = refine_targets(table, probabilities)
    positives = [tuple(np.flatnonzero(row)) for row in targets]
    assert positives == [(0,), (0, 16), (NEGATIVE_CLASS,), (14,), (NEGATIVE_CLASS,)]


def test_class_balanced_weights_follow_the_rarest_positive_class():
    targets = np.stack([multi_hot((0,))] * 4 + [multi_hot((0, 15))])
    weights = class_balanced_weights(targets, power=1.0)
    np.testing.assert_allclose(weights, [0.2, 0.2, 0.2, 0.2, 1.0])


def test_truth_targets_take_the_classes_of_the_overlapping_true_cell(tmp_path):
    segmented = np.zeros((16, 16), dtype=np.uint16)
    segmented[0:4, 0:4] = 1
    segmented[8:12, 8:12] = 2
    segmented[0:4, 10:14] = 3  # no true cell here
    (tmp_path / "masks").mkdir()
    write_labels_png(tmp_path / "masks" / "f0_cells.png", segmented)
    true_a, true_b = np.zeros((16, 16), dtype=bool), np.zeros((16, 16), dtype=bool)
    true_a[0:4, 0:5] = True  # IoU 16/20 with cell 1
    true_b[8:12, 8:12] = True
    text = f"0 1 {encode_kaggle_mask(true_a)} 16 1 {encode_kaggle_mask(true_a)} 14 1 {encode_kaggle_mask(true_b)}"
    solution = {"f0": SubmissionRow("f0", 16, 16, text)}
    table = table_of([(0, 14, 16)], [3])
    targets = truth_targets(table, solution, cache_dir=tmp_path)
    assert tuple(np.flatnonzero(targets[0])) == (0, 16)
    assert tuple(np.flatnonzero(targets[1])) == (14,)
    assert np.isnan(targets[2]).all()
