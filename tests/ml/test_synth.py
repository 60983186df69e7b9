import argparse
import csv

import numpy as np
import pytest

from ml import synth
from ml.constants import CHANNELS, NEGATIVE_CLASS
from ml.encoding import decode_kaggle_mask, parse_prediction_string, read_submission
from ml.io import find_fields, read_field, read_labels_png
from ml.synth import synthesize_field

SIZE_PX = 384


def field(seed: int, **kwargs) -> synth.SyntheticField:
    return synthesize_field(np.random.default_rng(seed), SIZE_PX, **kwargs)


def test_synthesize_field_is_deterministic_for_a_seed():
    first, second = field(3), field(3)
    np.testing.assert_array_equal(first.image, second.image)
    np.testing.assert_array_equal(first.cell_labels, second.cell_labels)
    assert first.cell_classes == second.cell_classes
    assert not np.array_equal(first.image, field(4).image)


def test_synthesize_field_labels_cells_consecutively_with_nucleus_inside_its_cell():
    result = field(5)
    assert result.image.shape == (len(CHANNELS), SIZE_PX, SIZE_PX)
    assert result.image.dtype == np.float32
    assert 0.0 <= result.image.min() and result.image.max() <= 1.0
    ids = np.unique(result.cell_labels)
    np.testing.assert_array_equal(ids, np.arange(result.cell_count + 1))
    nucleus = result.nuclei_labels > 0
    np.testing.assert_array_equal(result.cell_labels[nucleus], result.nuclei_labels[nucleus])
    assert set(np.unique(result.nuclei_labels)) == set(ids)


def test_synthesize_field_cuts_cells_at_the_border_and_lets_cells_touch():
    result = field(6)
    border = np.concatenate([result.cell_labels[0], result.cell_labels[-1], result.cell_labels[:, 0]])
    assert np.count_nonzero(np.unique(border)) > 0
    labels = result.cell_labels
    touching = (labels[:, 1:] != labels[:, :-1]) & (labels[:, 1:] > 0) & (labels[:, :-1] > 0)
    assert touching.any()


def test_image_labels_are_the_classes_its_cells_show():
    result = field(7, image_labels=(0, 16))
    assert result.image_labels == (0, 16)
    shown = {label for classes in result.cell_classes for label in classes}
    assert shown <= {0, 16, NEGATIVE_CLASS}
    assert {0, 16} <= shown


def test_negative_field_has_only_negative_cells():
    result = field(8, image_labels=(NEGATIVE_CLASS,))
    assert set(result.cell_classes) == {(NEGATIVE_CLASS,)}


def test_spindle_field_marks_only_some_cells_with_the_spindle():
    result = field(9, image_labels=(11,))
    assert set(result.cell_classes) == {(11,), (NEGATIVE_CLASS,)}
    assert sum(classes == (11,) for classes in result.cell_classes) < result.cell_count


def test_green_follows_each_cells_classes():
    nucleoplasm = field(10, image_labels=(0,))
    green = nucleoplasm.image[CHANNELS.index("green")]
    showing = [i + 1 for i, c in enumerate(nucleoplasm.cell_classes) if c == (0,)]
    silent = [i + 1 for i, c in enumerate(nucleoplasm.cell_classes) if c == (NEGATIVE_CLASS,)]
    assert showing and silent
    nuclei = nucleoplasm.nuclei_labels
    assert green[np.isin(nuclei, showing)].mean() > 3 * green[np.isin(nuclei, silent)].mean()


def test_synthesize_field_rejects_a_size_too_small_for_cells():
    with pytest.raises(ValueError, match="too small"):
        synthesize_field(np.random.default_rng(0), 64)


def test_synth_command_writes_kaggle_layout_with_per_cell_truth(tmp_path):
    args = argparse.Namespace(out=tmp_path, n_images=2, seed=11, size=256, bit_depth=16)
    assert synth.run(args) == 0
    fields = find_fields(tmp_path)
    assert list(fields) == [synth.field_id(11, 0), synth.field_id(11, 1)]
    with open(tmp_path / "train.csv", newline="") as handle:
        train_rows = list(csv.DictReader(handle))
    assert [row["ID"] for row in train_rows] == list(fields)

    image_id = synth.field_id(11, 1)
    expected = synthesize_field(np.random.default_rng([11, 1]), 256)
    assert train_rows[1]["Label"] == "|".join(map(str, expected.image_labels))
    loaded = read_field(fields[image_id])
    assert loaded.bit_depth == 16
    np.testing.assert_allclose(loaded.stack(), expected.image, atol=1 / 65535)
    cells = read_labels_png(tmp_path / "truth" / f"{image_id}_cells.png")
    np.testing.assert_array_equal(cells, expected.cell_labels)

    solution = {row.image_id: row for row in read_submission(tmp_path / "solution.csv")}[image_id]
    triples = parse_prediction_string(solution.prediction_string)
    assert len(triples) == sum(len(classes) for classes in expected.cell_classes)
    label, confidence, mask_text = triples[0]
    assert (label, confidence) == (expected.cell_classes[0][0], 1.0)
    np.testing.assert_array_equal(decode_kaggle_mask(mask_text, height=256, width=256), cells == 1)
