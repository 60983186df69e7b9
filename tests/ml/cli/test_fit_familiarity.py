import pytest
import torch

from ml.checkpoints import load_classifier_checkpoint
from ml.classifier.familiarity import METHOD
from ml.cli import main
from ml.cli import options as cli_options
from tests.ml.segmentation.support import ThresholdSegmenter


@pytest.fixture(autouse=True)
def threshold_segmenter(monkeypatch):
    monkeypatch.setattr(cli_options, "Segmenter", ThresholdSegmenter)


@pytest.fixture
def training_dir(images_dir):
    """The command tests' two fields (three cells in all) with image labels."""
    (images_dir / "train.csv").write_text("ID,Label\na-cells,0|5\nb-empty,18\n")
    return images_dir


def fit(*options: str) -> int:
    return main(["fit-familiarity", *options, "--device", "cpu"])


def test_fit_familiarity_adds_a_block_and_leaves_the_weights_bit_identical(training_dir, tiny_checkpoint, tmp_path):
    before = torch.load(tiny_checkpoint, weights_only=True)
    out = tmp_path / "described.pt"
    assert fit("--model", str(tiny_checkpoint), "--data", str(training_dir), "--out", str(out)) == 0

    after = torch.load(out, weights_only=True)
    assert all(torch.equal(after["model"][key], tensor) for key, tensor in before["model"].items())
    assert list(after["model"]) == list(before["model"])
    block = after["familiarity"]
    assert (block["method"], block["percentile"], block["training_cells"]) == (METHOD, 99.0, 3)
    layers = [(layer["name"], layer["feature_size"]) for layer in block["layers"]]
    assert layers == [("stem", 8), ("stage1", 8), ("stage2", 16)]  # every layer of the tiny network
    thresholds = tuple(layer["threshold"] for layer in block["layers"])
    assert load_classifier_checkpoint(out)[1]["familiarity"].thresholds == thresholds
    assert "familiarity" not in torch.load(tiny_checkpoint, weights_only=True)  # --out leaves the input alone
    # The crops came through the training cell store at the checkpoint's input size.
    assert sorted(p.name for p in (training_dir / ".hpaweb-cache" / "cells-32px" / "fields").iterdir()) == ["a-cells", "b-empty"]  # fmt: skip


def test_fit_familiarity_updates_the_checkpoint_in_place_without_out(training_dir, tiny_checkpoint):
    assert fit("--model", str(tiny_checkpoint), "--data", str(training_dir)) == 0
    assert load_classifier_checkpoint(tiny_checkpoint)[1]["familiarity"].training_cells == 3


def test_fit_familiarity_with_too_few_cells_says_so(training_dir, tiny_checkpoint, capsys):
    (training_dir / "train.csv").write_text("ID,Label\nb-empty,18\n")
    assert fit("--model", str(tiny_checkpoint), "--data", str(training_dir)) == 2
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert last_line == (
        "The fields give 0 cell(s); describing the training cells needs at least 3. "
        "Pass a data folder whose fields have cells."
    )


def test_fit_familiarity_without_train_csv_exits_2_and_says_what_is_missing(images_dir, tiny_checkpoint, capsys):
    assert fit("--model", str(tiny_checkpoint), "--data", str(images_dir)) == 2
    assert capsys.readouterr().err.strip() == (
        f"{images_dir / 'train.csv'} does not exist; a training folder needs a train.csv with columns ID,Label."
    )


def test_fit_familiarity_with_a_missing_model_exits_2_with_the_reason(training_dir, tmp_path, capsys):
    assert fit("--model", str(tmp_path / "absent.pt"), "--data", str(training_dir)) == 2
    assert "There is no model file at" in capsys.readouterr().err
