import pytest
import torch

from ml.segmentation.hpa.config import DPN92_ENCODER, UNET_ARCHITECTURE, build_unet, unet_config
from ml.segmentation.hpa.preprocess import MEAN, SCALE_FACTOR, STD
from tests.ml.support import TINY_ENCODER


def test_config_names_the_network_its_inputs_and_its_preprocessing():
    assert unet_config("cell") == {
        "architecture": UNET_ARCHITECTURE,
        "kind": "cell",
        "input_channels": ["red", "yellow", "blue"],
        "output_classes": ["unused", "border", "foreground"],
        "scale_factor": SCALE_FACTOR,
        "mean": list(MEAN),
        "std": list(STD),
        "encoder": DPN92_ENCODER,
    }
    assert unet_config("nuclei")["input_channels"] == ["blue", "blue", "blue"]


def test_config_keeps_its_own_copy_of_the_encoder():
    encoder = dict(TINY_ENCODER)
    config = unet_config("nuclei", encoder=encoder)
    encoder["groups"] = 1
    assert config["encoder"] == TINY_ENCODER


def test_config_refuses_an_unknown_kind():
    with pytest.raises(ValueError, match=r"^Unknown segmentation network kind 'cells'; use one of nuclei, cell\.$"):
        unet_config("cells")


def test_build_unet_follows_the_encoder_widths_of_the_config():
    model = build_unet(unet_config("cell", encoder=TINY_ENCODER)).eval()
    assert model.state_dict()["encoder_stages.0.0.weight"].shape[0] == TINY_ENCODER["stem_channels"]
    with torch.inference_mode():
        assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 3, 64, 64)
