from pathlib import Path

import numpy as np
import pytest

from ml.checkpoints import load_unet_checkpoint, save_unet_checkpoint
from ml.cli import main
from ml.segmentation.hpa.config import build_unet, unet_config
from tests.ml.segmentation.support import write_label_dataset
from tests.ml.support import TINY_ENCODER


@pytest.fixture
def dataset(tmp_path) -> tuple[Path, Path]:
    """Two 128 px fields with their nuclei and cell label images, in the layout train-seg reads."""
    return write_label_dataset(tmp_path)


def test_command_reports_a_missing_label_image(dataset, tmp_path, capsys):
    images, labels = dataset
    (labels / "b_cells.png").unlink()
    assert main(["train-seg", "--images", str(images), "--labels", str(labels), "--out", str(tmp_path / "x.pt")]) == 2
    assert "Field b has no label image b_cells.png" in capsys.readouterr().err


def test_command_refuses_initial_weights_of_the_other_network(dataset, tmp_path, capsys):
    images, labels = dataset
    config = unet_config("nuclei", encoder=TINY_ENCODER)
    save_unet_checkpoint(tmp_path / "nuclei.pt", state_dict=build_unet(config).state_dict(), config=config)
    arguments = ["train-seg", "--images", str(images), "--labels", str(labels), "--out", str(tmp_path / "x.pt")]
    assert main([*arguments, "--kind", "cell", "--init", str(tmp_path / "nuclei.pt")]) == 2
    assert "holds the nuclei network but was given as the cell network" in capsys.readouterr().err


@pytest.mark.slow
def test_command_trains_the_full_network_for_one_step(dataset, tmp_path):
    images, labels = dataset
    out = tmp_path / "cell-net.pt"
    arguments = ["train-seg", "--images", str(images), "--labels", str(labels), "--out", str(out)]
    assert main([*arguments, "--epochs", "1", "--val-fraction", "0", "--device", "cpu"]) == 0
    _, info = load_unet_checkpoint(out, kind="cell")
    assert info["config"] == unet_config("cell")
    assert np.isfinite(info["metrics"]["train_loss"])
