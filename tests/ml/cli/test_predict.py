import csv

import numpy as np
import pytest

from ml import constants
from ml.classifier.predictor import Predictor
from ml.cli import main
from ml.cli import options as cli_options
from ml.encoding import decode_kaggle_mask, parse_prediction_string
from ml.io import find_fields, read_field
from ml.pipeline import analyse_field
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


def described_checkpoint(path, images_dir):
    """The tiny classifier with a familiarity block fitted on the cells of `images_dir`."""
    (images_dir / "train.csv").write_text("ID,Label\na-cells,0\nb-empty,1\n")
    assert main(["fit-familiarity", "--model", str(path), "--data", str(images_dir), "--device", "cpu"]) == 0
    return path


def test_predict_writes_one_row_per_cell_with_familiarity_to_the_cells_csv(images_dir, tiny_checkpoint, tmp_path):

    model = described_checkpoint(tiny_checkpoint, images_dir)
    cells_csv = tmp_path / "cells.csv"
    assert run_predict(images_dir, tmp_path / "s.csv", "--model", str(model), "--cells-csv", str(cells_csv), "--device", "cpu") == 0  # fmt: skip

    with open(cells_csv, newline="") as file:
        header = next(csv.reader(file))
    assert header == [
        "ID", "cell_id", "min_row", "min_col", "max_row", "max_col", "area_px", *constants.CLASS_NAMES,
        "top_class", "familiarity", "unfamiliar", "model_name", "model_version",
        "qc_flags", "qc_out_of_focus", "qc_cut_by_border", "qc_merged", "qc_failed_contour", "qc_too_small",
    ]  # fmt: skip
    rows = read_csv(cells_csv)
    assert [(row["ID"], row["cell_id"]) for row in rows] == [("a-cells", "1"), ("a-cells", "2"), ("a-cells", "3")]
    # The drawn cells are disks of radius 45 px around (60, 60), (60, 190), (190, 120).
    assert [row["min_row"] + "," + row["min_col"] + "," + row["max_row"] + "," + row["max_col"] for row in rows] == [
        "15,15,106,106",
        "15,145,106,236",
        "145,75,236,166",
    ]
    drawn = draw_field()
    assert [int(row["area_px"]) for row in rows] == [int((drawn.cell_labels == i).sum()) for i in (1, 2, 3)]
    for row in rows:
        probabilities = [float(row[name]) for name in constants.CLASS_NAMES]
        assert row["top_class"] == constants.CLASS_NAMES[int(np.argmax(probabilities))]
        assert (row["model_name"], row["model_version"]) == ("tiny-model", "1")
    # The familiarity columns are the pipeline's own, written as they come.
    result = analyse_field(
        read_field(find_fields(images_dir)["a-cells"]),
        segmenter=ThresholdSegmenter("classical"),
        predictor=Predictor.from_checkpoint(model, device="cpu"),
    )
    assert [row["familiarity"] for row in rows] == [f"{cell.familiarity:.6g}" for cell in result.cells]
    assert [row["unfamiliar"] for row in rows] == [str(int(cell.unfamiliar)) for cell in result.cells]


def test_the_cells_csv_leaves_familiarity_empty_without_a_description_and_the_submission_unchanged(
    images_dir, tiny_checkpoint, tmp_path
):
    plain = tmp_path / "plain.csv"
    assert run_predict(images_dir, plain, "--model", str(tiny_checkpoint), "--device", "cpu") == 0
    with_cells = tmp_path / "with-cells.csv"
    cells_csv = tmp_path / "cells.csv"
    assert run_predict(images_dir, with_cells, "--model", str(tiny_checkpoint), "--cells-csv", str(cells_csv), "--device", "cpu") == 0  # fmt: skip
    assert with_cells.read_bytes() == plain.read_bytes()
    rows = read_csv(cells_csv)
    assert len(rows) == 3
    assert all(row["familiarity"] == "" and row["unfamiliar"] == "" for row in rows)
    triples = parse_prediction_string(read_csv(plain)[0]["PredictionString"])
    assert [float(rows[0][name]) for name in constants.CLASS_NAMES] == [confidence for _, confidence, _ in triples[:19]]
