import numpy as np
import pytest
from PIL import Image

from ml.cli import main
from ml.cli import options as cli_options
from ml.io import read_labels_png
from tests.ml.segmentation.support import ThresholdSegmenter
from tests.ml.support import FOREGROUND, constant_network


@pytest.fixture(autouse=True)
def threshold_segmenter(monkeypatch):
    monkeypatch.setattr(cli_options, "Segmenter", ThresholdSegmenter)


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
    assert (
        main(["segment", "--images", str(images_dir), "--out", str(out), "--segmentation", "unet", "--device", "cpu"])
        == 2
    )
    assert "The unet segmentation backend needs nuclei network weights" in capsys.readouterr().err
    assert not out.exists()
