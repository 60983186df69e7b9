import csv

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from skimage.segmentation import expand_labels

from ml import constants
from ml.cli import segment as segment_cli
from ml.cli import main
from ml.encoding import decode_kaggle_mask, parse_prediction_string
from ml.io import FieldImages, read_labels_png
from ml.segmentation import Segmentation
from tests.ml.support import FOREGROUND, constant_network, draw_field, write_field_pngs


class ThresholdSegmenter:
    """Stands in for a backend: nuclei are bright blue blobs, cells grow from them over green."""

    def __init__(self, backend: str, **options) -> None:
        self.backend = backend

    def __call__(self, field: FieldImages) -> Segmentation:
        nuclei_labels = ndimage.label(field.blue > 0.5)[0].astype(np.uint16)
        cell_labels = np.where(field.green > 0.1, expand_labels(nuclei_labels, distance=60), 0).astype(np.uint16)
        return Segmentation(nuclei_labels, cell_labels, backend=self.backend, channels_used=("green", "blue"))


@pytest.fixture
def images_dir(tmp_path):
    """Two fields in Kaggle layout: "a-cells" with three cells, "b-empty" with none."""
    directory = tmp_path / "images"
    directory.mkdir()
    write_field_pngs(directory, "a-cells", draw_field().field)
    write_field_pngs(directory, "b-empty", draw_field(centres=()).field)
    return directory


@pytest.fixture(autouse=True)
def threshold_segmenter(monkeypatch):
    monkeypatch.setattr(segment_cli, "Segmenter", ThresholdSegmenter)


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


def test_segment_writes_16bit_nucleus_and_cell_label_images(images_dir, tmp_path):
    out = tmp_path / "labels"
    assert main(["segment", "--images", str(images_dir), "--out", str(out), "--device", "cpu"]) == 0
    assert sorted(path.name for path in out.iterdir()) == [
        "a-cells_cells.png",
        "a-cells_nuclei.png",
        "b-empty_cells.png",
        "b-empty_nuclei.png",
    ]
    with Image.open(out / "a-cells_cells.png") as image:
        assert image.mode == "I;16"
    cells = read_labels_png(out / "a-cells_cells.png")
    nuclei = read_labels_png(out / "a-cells_nuclei.png")
    assert cells.dtype == np.uint16 and cells.shape == (256, 256)
    assert set(np.unique(cells)) == {0, 1, 2, 3}
    assert set(np.unique(cells[nuclei > 0])) == {1, 2, 3}
    assert not read_labels_png(out / "b-empty_cells.png").any()


def test_segment_with_the_unet_backend_uses_the_given_weights(images_dir, tmp_path, monkeypatch):
    monkeypatch.undo()  # the real segmenter, not the stand-in
    nuclei = constant_network(tmp_path / "nuclei.pt", kind="nuclei", logits=FOREGROUND)
    cell = constant_network(tmp_path / "cell.pt", kind="cell", logits=FOREGROUND)
    out = tmp_path / "labels"
    arguments = ["--segmentation", "unet", "--nuclei-weights", str(nuclei), "--cell-weights", str(cell)]
    assert main(["segment", "--images", str(images_dir), "--out", str(out), *arguments, "--device", "cpu"]) == 0
    # Foreground everywhere: one cell, holding one nucleus, covers each field.
    for image_id in ("a-cells", "b-empty"):
        assert np.array_equal(read_labels_png(out / f"{image_id}_cells.png"), np.ones((256, 256), np.uint16))
        assert np.array_equal(read_labels_png(out / f"{image_id}_nuclei.png"), np.ones((256, 256), np.uint16))


def test_segment_with_the_unet_backend_without_weights_exits_2(images_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.undo()
    out = tmp_path / "labels"
    assert main(["segment", "--images", str(images_dir), "--out", str(out), "--segmentation", "unet", "--device", "cpu"]) == 2
    assert "The unet segmentation backend needs nuclei network weights" in capsys.readouterr().err
    assert not out.exists()
