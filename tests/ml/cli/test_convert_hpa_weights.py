import pytest
import torch

from ml.checkpoints import load_unet_checkpoint
from ml.cli import main
from ml.segmentation.hpa.config import unet_config
from tests.ml.segmentation.hpa.official_weights import (
    assert_same_tensors,
    full_zoo_network,
    save_as_pytorch_zoo,
    small_zoo_model,
)


def test_command_refuses_a_network_of_another_layout(tmp_path, capsys):
    source = tmp_path / "dpn_unet_cell_3ch_v1.pth"
    save_as_pytorch_zoo(source, small_zoo_model)
    assert main(["convert-hpa-weights", str(source), str(tmp_path / "out.pt")]) == 2
    assert "dpn_unet_cell_3ch_v1.pth is not the HPA DPN-92 U-Net" in capsys.readouterr().err
    assert not (tmp_path / "out.pt").exists()


@pytest.mark.slow
def test_converts_the_full_network_to_a_weights_only_checkpoint(tmp_path, capsys):
    source = tmp_path / "dpn_unet_nuclei_v1.pth"
    model = save_as_pytorch_zoo(source, full_zoo_network)
    destination = tmp_path / "hpa-nuclei.pt"
    assert main(["convert-hpa-weights", str(source), str(destination)]) == 0
    assert f"Wrote the nuclei network to {destination}." in capsys.readouterr().err
    checkpoint = torch.load(destination, map_location="cpu", weights_only=True)
    assert checkpoint["config"] == unet_config("nuclei")
    assert checkpoint["version"] == 1
    assert checkpoint["source"]["file"] == "dpn_unet_nuclei_v1.pth"
    assert_same_tensors(checkpoint["model"], model.state_dict())
    loaded, _ = load_unet_checkpoint(destination, kind="nuclei")
    assert_same_tensors(loaded.state_dict(), model.state_dict())
