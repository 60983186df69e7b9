import csv

import numpy as np
import pytest
from PIL import Image

from ml.constants import CHANNELS
from ml.encoding import decode_kaggle_mask, parse_prediction_string, read_submission
from ml.io import read_labels_png
from ml.synth import field_id, synthesize_field, write_dataset

SIZE_PX = 256


def test_field_id_names_the_seed_and_the_index():
    assert field_id(11, 3) == "synth-s11-00003"


def test_write_dataset_writes_8_bit_channels_rounded_from_the_field(tmp_path):
    write_dataset(tmp_path, n_images=1, seed=4, size_px=SIZE_PX, bit_depth=8)
    expected = synthesize_field(np.random.default_rng([4, 0]), SIZE_PX)
    for channel, plane in zip(CHANNELS, expected.image, strict=True):
        pixels = np.asarray(Image.open(tmp_path / f"{field_id(4, 0)}_{channel}.png"))
        assert pixels.dtype == np.uint8
        np.testing.assert_array_equal(pixels, np.round(plane * 255).astype(np.uint8))
    nuclei = read_labels_png(tmp_path / "truth" / f"{field_id(4, 0)}_nuclei.png")
    np.testing.assert_array_equal(nuclei, expected.nuclei_labels)


def test_write_dataset_solution_holds_every_true_label_of_every_cell(tmp_path):
    write_dataset(tmp_path, n_images=1, seed=5, size_px=SIZE_PX, bit_depth=8)
    expected = synthesize_field(np.random.default_rng([5, 0]), SIZE_PX)
    (row,) = read_submission(tmp_path / "solution.csv")
    assert (row.image_id, row.width, row.height) == (field_id(5, 0), SIZE_PX, SIZE_PX)
    truth = [(label, cell_id) for cell_id, classes in enumerate(expected.cell_classes, start=1) for label in classes]
    triples = parse_prediction_string(row.prediction_string)
    assert [label for label, _confidence, _mask in triples] == [label for label, _cell_id in truth]
    assert {confidence for _label, confidence, _mask in triples} == {1.0}
    for (_label, _confidence, mask_text), (_truth_label, cell_id) in zip(triples, truth, strict=True):
        mask = decode_kaggle_mask(mask_text, height=SIZE_PX, width=SIZE_PX)
        np.testing.assert_array_equal(mask, expected.cell_labels == cell_id)


def test_write_dataset_draws_each_field_from_its_seed_and_index_alone(tmp_path):
    write_dataset(tmp_path / "one", n_images=1, seed=6, size_px=SIZE_PX, bit_depth=16)
    write_dataset(tmp_path / "three", n_images=3, seed=6, size_px=SIZE_PX, bit_depth=16)
    for name in (f"{field_id(6, 0)}_green.png", f"truth/{field_id(6, 0)}_cells.png"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "three" / name).read_bytes()
    with open(tmp_path / "three" / "train.csv", newline="") as handle:
        assert [row["ID"] for row in csv.DictReader(handle)] == [field_id(6, i) for i in range(3)]


def test_write_dataset_reports_progress_after_each_field(tmp_path):
    calls = []
    write_dataset(tmp_path, n_images=2, seed=7, size_px=128, bit_depth=8, progress=lambda *call: calls.append(call))
    assert calls == [(1, 2), (2, 2)]


def test_write_dataset_rejects_an_unsupported_bit_depth(tmp_path):
    with pytest.raises(ValueError, match="use 8 or 16"):
        write_dataset(tmp_path, n_images=1, seed=0, size_px=SIZE_PX, bit_depth=12)
    assert not any(tmp_path.iterdir())
