import csv

import numpy as np
import pytest

from ml import constants
from ml.cli import main
from ml.cli import options as cli_options
from ml.encoding import decode_kaggle_mask, parse_prediction_string
from tests.ml.segmentation.support import ThresholdSegmenter
from tests.ml.support import draw_field


@pytest.fixture(autouse=True)
def threshold_segmenter(monkeypatch):
    monkeypatch.setattr(cli_options, "Segmenter", ThresholdSegmenter)


def run_predict(images_dir, out, *options: str) -> int:
    return main(["predict", "--images", str(images_dir), "--out", str(out), *options])


def read_csv(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_predict_writes_one_row_per_field_with_triples_per_cell(images_dir, tiny_checkpoint, tmp_path):
    out = tmp_path / "submission.csv"
    assert run_predict(images_dir, out, "--model", str(tiny_checkpoint), "--device", "cpu") == 0
    rows = read_csv(out)
    assert [row["ID"] for row in rows] == ["a-cells", "b-empty"]
    assert [(row["ImageWidth"], row["ImageHeight"]) for row in rows] == [("256", "256"), ("256", "256")]
    assert rows[1]["PredictionString"] == ""

    triples = parse_prediction_string(rows[0]["PredictionString"])
    assert len(triples) == 3 * 19
    assert [label for label, _, _ in triples[:19]] == list(range(19))
    masks = [decode_kaggle_mask(text, height=256, width=256) for _, _, text in triples[::19]]
    drawn = draw_field()
    for mask in masks:  # each cell mask holds exactly one drawn nucleus
        nucleus_ids = np.unique(drawn.nuclei_labels[mask])
        assert len(nucleus_ids[nucleus_ids > 0]) == 1
    assert all(0.0 <= confidence <= 1.0 for _, confidence, _ in triples)


def test_predict_uses_the_installed_model_by_default(images_dir, tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "DEFAULT_MODEL_PATH", tiny_checkpoint)
    out = tmp_path / "submission.csv"
    assert run_predict(images_dir, out, "--device", "cpu") == 0
    assert len(read_csv(out)) == 2


def test_predict_without_an_installed_model_exits_2_and_says_how_to_pass_one(images_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(constants, "DEFAULT_MODEL_PATH", tmp_path / "absent.pt")
    out = tmp_path / "submission.csv"
    assert run_predict(images_dir, out) == 2
    assert "No trained model is installed" in capsys.readouterr().err
    assert not out.exists()


def test_predict_with_an_unusable_model_exits_2_with_the_reason(images_dir, tmp_path, capsys):
    (tmp_path / "broken.pt").write_text("not a model")
    assert run_predict(images_dir, tmp_path / "s.csv", "--model", str(tmp_path / "broken.pt")) == 2
    assert "broken.pt is not an hpaweb classifier checkpoint" in capsys.readouterr().err


def test_predict_on_a_folder_without_fields_exits_2(tmp_path, tiny_checkpoint, capsys):
    (tmp_path / "empty").mkdir()
    assert run_predict(tmp_path / "empty", tmp_path / "s.csv", "--model", str(tiny_checkpoint)) == 2
    assert "No fields found in" in capsys.readouterr().err


def test_predict_names_the_field_with_an_unreadable_channel(images_dir, tiny_checkpoint, tmp_path, capsys):
    (images_dir / "b-empty_blue.png").write_text("broken")
    assert run_predict(images_dir, tmp_path / "s.csv", "--model", str(tiny_checkpoint), "--device", "cpu") == 1
    assert "Field b-empty: The blue channel (b-empty_blue.png) is not a PNG or TIFF image" in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists()
