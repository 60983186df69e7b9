import argparse
import csv

import numpy as np
import pytest

from ml.cli import main
from ml.cli import synth as synth_command
from ml.encoding import decode_kaggle_mask, parse_prediction_string, read_submission
from ml.io import find_fields, read_field, read_labels_png
from ml.synth import REFERENCE_SIZE_PX, field_id, synthesize_field


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    synth_command.configure_parser(parser)
    return parser.parse_args(argv)


def test_synth_command_writes_kaggle_layout_with_per_cell_truth(tmp_path):
    args = parse(["--out", str(tmp_path), "--n-images", "2", "--seed", "11", "--size", "256", "--bit-depth", "16"])
    assert synth_command.run(args) == 0
    fields = find_fields(tmp_path)
    assert list(fields) == [field_id(11, 0), field_id(11, 1)]
    with open(tmp_path / "train.csv", newline="") as handle:
        train_rows = list(csv.DictReader(handle))
    assert [row["ID"] for row in train_rows] == list(fields)

    image_id = field_id(11, 1)
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


def test_synth_command_defaults_to_8_bit_reference_size_fields(tmp_path):
    args = parse(["--out", str(tmp_path), "--n-images", "1", "--seed", "0"])
    assert (args.size, args.bit_depth) == (REFERENCE_SIZE_PX, 8)


def test_python_m_ml_synth_runs_the_command(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path), "--n-images", "1", "--seed", "2", "--size", "128"]) == 0
    assert list(find_fields(tmp_path)) == [field_id(2, 0)]
    output = capsys.readouterr().out
    assert f"wrote 1 fields to {tmp_path}" in output
    assert "0 Nucleoplasm" in output and "18 Negative" in output


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--n-images", "0"], "--n-images must be at least 1."),
        (["--n-images", "1", "--size", "100"], "--size 100 is outside 128..4096 px; choose a size in that range."),
        (["--n-images", "1", "--size", "5000"], "--size 5000 is outside 128..4096 px; choose a size in that range."),
    ],
)
def test_synth_command_rejects_impossible_options_with_a_sentence(tmp_path, argv, message):
    args = parse(["--out", str(tmp_path / "out"), "--seed", "0", *argv])
    with pytest.raises(SystemExit, match=message) as raised:
        synth_command.run(args)
    assert raised.value.code == message
    assert not (tmp_path / "out").exists()


def test_synth_command_accepts_only_8_or_16_bits(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse(["--out", str(tmp_path), "--n-images", "1", "--seed", "0", "--bit-depth", "12"])
    assert "invalid choice: 12" in capsys.readouterr().err
