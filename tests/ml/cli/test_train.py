import pytest
import torch

from ml.checkpoints import load_classifier_checkpoint
from ml.cli import main
from ml.constants import NUM_CLASSES
from ml.synth import write_dataset


@pytest.mark.slow
def test_train_command_writes_a_checkpoint_the_predictor_can_load(tmp_path):
    data = tmp_path / "data"
    write_dataset(data, n_images=4, seed=5, size_px=512, bit_depth=8)
    out = tmp_path / "model.pt"
    argv = ["train", "--data", str(data), "--out", str(out), "--size", "32", "--epochs", "1", "--refine-rounds", "1",
            "--refine-epochs", "1", "--widths", "8", "8", "16", "16", "--val-fraction", "0.5", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    model, checkpoint = load_classifier_checkpoint(out)
    assert checkpoint["config"]["input_size_px"] == 32
    assert checkpoint["config"]["blend_cell_weight"] == 0.7
    assert checkpoint["data"]["fields"] == 4
    assert checkpoint["data"]["refine_rounds"] == 1
    assert len(checkpoint["metrics"]["history"]) == 2
    assert model(torch.zeros(1, 4, 32, 32)).shape == (1, NUM_CLASSES)


def test_train_command_says_what_is_missing_in_the_data_folder(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "m.pt"), "--device", "cpu"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"{tmp_path / 'train.csv'} does not exist; a training folder needs a train.csv with columns ID,Label."
    )
    assert not (tmp_path / "m.pt").exists()


def test_train_command_refuses_an_unknown_backbone_with_a_sentence(tmp_path, capsys):
    from tests.ml.training.test_train_api import build_store

    build_store(tmp_path / "store")
    argv = ["train", "--store", str(tmp_path / "store"), "--out", str(tmp_path / "m.pt"), "--size", "32",
            "--arch", "resnet-nineteen", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 2
    assert capsys.readouterr().err.strip().startswith("There is no backbone called 'resnet-nineteen'; use compact")
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.slow
def test_train_command_fine_tunes_efficientnet_lite0_from_imagenet_and_the_predictor_serves_it(tmp_path):
    from ml.classifier.loading import load_classifier
    from ml.training.backbones import four_channel_stem, imagenet_weights_path
    from tests.ml.training.test_train_api import build_store

    build_store(tmp_path / "store")
    out = tmp_path / "lite0.pt"
    argv = ["train", "--store", str(tmp_path / "store"), "--out", str(out), "--size", "32", "--arch",
            "efficientnet_lite0", "--pretrained", "imagenet", "--epochs", "1", "--refine-rounds", "0", "--lr", "0",
            "--batch-size", "4", "--device", "cpu", "--val-fraction", "0.3"]  # fmt: skip
    assert main(argv) == 0
    model, checkpoint = load_classifier_checkpoint(out)
    assert checkpoint["config"]["architecture"] == "timm-cell-classifier"
    assert checkpoint["config"]["backbone"] == "efficientnet_lite0" and checkpoint["data"]["pretrained"] == "imagenet"
    imagenet = torch.load(imagenet_weights_path("efficientnet_lite0"), weights_only=True)
    # lr 0: the weights are the ImageNet start itself
    torch.testing.assert_close(model.backbone.conv_stem.weight, four_channel_stem(imagenet["_conv_stem.weight"]))
    predictor = load_classifier(out, device="cpu")
    assert predictor.description.architecture == "timm-cell-classifier" and predictor.input_size_px == 32
