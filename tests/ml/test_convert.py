import os
import sys
import types
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from ml.cli import main
from ml.segmentation import dpnunet
from ml.segmentation.convert import WeightFileError, check_layout, convert, read_official_weights
from ml.segmentation.unet import load_unet_checkpoint, unet_config

ZOO_CLASSES = {  # pytorch_zoo class -> the module of ours that has its layout
    "pytorch_zoo.unet.DPNUnet": dpnunet.DPNUnet,
    "pytorch_zoo.abstract_model.ConvBottleneck": dpnunet.SkipMerge,
    "pytorch_zoo.abstract_model.UnetDecoderBlock": dpnunet.UpsampleConv,
    "pytorch_zoo.dpn.DualPathBlock": dpnunet.DualPathBlock,
    "pytorch_zoo.dpn.BnActConv2d": dpnunet.PreActConv,
    "pytorch_zoo.dpn.CatBnAct": dpnunet.CatBnAct,
}


def save_as_pytorch_zoo(path: Path, build: Callable[[dict[str, type]], nn.Module]) -> nn.Module:
    """torch.save a whole module whose classes live in a stand-in `pytorch_zoo` package.

    `build` gets the stand-in classes by name (subclasses of ours, so the pickle names
    pytorch_zoo paths); the package is gone again before this returns, as on a machine that
    never installed it.
    """
    packages = {"pytorch_zoo": types.ModuleType("pytorch_zoo")}
    classes = {}
    for path_name, base in ZOO_CLASSES.items():
        module_name, class_name = path_name.rsplit(".", 1)
        module = packages.setdefault(module_name, types.ModuleType(module_name))
        stand_in = type(class_name, (base,), {"__module__": module_name, "__qualname__": class_name})
        setattr(module, class_name, stand_in)
        classes[class_name] = stand_in
    sys.modules.update(packages)
    try:
        model = build(classes)
        torch.save(model, path)
    finally:
        for name in packages:
            del sys.modules[name]
    return model


def as_pytorch_zoo(model: nn.Module, classes: dict[str, type]) -> nn.Module:
    """Re-class every block of our DPNUnet as its pytorch_zoo counterpart."""
    stand_ins = {base: classes[path.rsplit(".", 1)[1]] for path, base in ZOO_CLASSES.items()}
    for module in model.modules():
        module.__class__ = stand_ins.get(type(module), type(module))
    model.decoder_block = classes["UnetDecoderBlock"]  # pytorch_zoo keeps classes as attributes
    return model.eval()


def small_zoo_model(classes: dict[str, type]) -> nn.Module:
    """DPN-92's topology at small widths (a layout the converter refuses)."""
    torch.manual_seed(0)
    model = dpnunet.DPNUnet(
        stem_channels=8,
        blocks=(1, 1, 1, 1),
        residual_channels=(8, 8, 8, 8),
        bottleneck_channels=(4, 4, 4, 4),
        dense_increments=(2, 2, 2, 2),
        groups=2,
    )
    model.encoder_stages[0][1].running_mean.uniform_()  # buffers must come through too
    return as_pytorch_zoo(model, classes)


def assert_same_tensors(found: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert list(found) == list(expected)
    for key, tensor in expected.items():
        assert found[key].dtype == tensor.dtype
        assert torch.equal(found[key], tensor), key


def test_reads_the_tensors_of_a_pickled_module_without_its_package(tmp_path):
    path = tmp_path / "zoo.pth"
    model = save_as_pytorch_zoo(path, small_zoo_model)
    state_dict, facts = read_official_weights(path)
    assert_same_tensors(state_dict, model.state_dict())
    assert facts == {"data_parallel": False, "saved_in_training_mode": False}
    assert "pytorch_zoo" not in sys.modules


def test_strips_the_data_parallel_prefix(tmp_path):
    path = tmp_path / "wrapped.pth"
    model = save_as_pytorch_zoo(path, lambda classes: nn.DataParallel(small_zoo_model(classes)))
    state_dict, facts = read_official_weights(path)
    assert_same_tensors(state_dict, model.module.state_dict())
    assert facts["data_parallel"] is True


class RunsCode:
    """Unpickling this would create a folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __reduce__(self):
        return os.mkdir, (str(self.folder),)


def test_refuses_any_other_global_without_running_it(tmp_path):
    path = tmp_path / "malicious.pth"
    witness = tmp_path / "was-run"

    def build(classes):
        model = small_zoo_model(classes)
        model.payload = RunsCode(witness)
        return model

    save_as_pytorch_zoo(path, build)
    with pytest.raises(WeightFileError, match=r"names posix\.mkdir, which is not part of the HPA DPN-U-Net"):
        read_official_weights(path)
    assert not witness.exists()


def test_refuses_a_pickled_object_that_is_not_a_module(tmp_path):
    path = tmp_path / "state_dict.pth"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(WeightFileError, match="holds a dict, not a pickled DPN-U-Net module"):
        read_official_weights(path)


def test_refuses_damaged_and_missing_files(tmp_path):
    damaged = tmp_path / "dpn_unet_nuclei_v1.pth"
    damaged.write_bytes(b"not a pickle at all")
    with pytest.raises(WeightFileError, match="could not be read as a pickled PyTorch module"):
        read_official_weights(damaged)
    with pytest.raises(WeightFileError, match="There is no weight file at"):
        read_official_weights(tmp_path / "absent.pth")


def test_layout_check_names_what_does_not_match(tmp_path):
    with torch.device("meta"):
        expected = dpnunet.DPNUnet().state_dict()
    state_dict = {key: torch.empty(tensor.shape, device="meta") for key, tensor in expected.items()}
    del state_dict["final.0.bias"]
    state_dict["final.0.weight"] = torch.empty(2, 64, 3, 3, device="meta")
    state_dict["extra.weight"] = torch.empty(1, device="meta")
    with pytest.raises(WeightFileError) as raised:
        check_layout(state_dict, source="x.pth")
    assert str(raised.value) == (
        "x.pth is not the HPA DPN-92 U-Net: 1 weights missing (such as final.0.bias); 1 unknown weights "
        "(such as extra.weight); 1 weights of another shape (such as final.0.weight: [2, 64, 3, 3], expected "
        "[3, 64, 3, 3]); pass dpn_unet_nuclei_v1.pth or dpn_unet_cell_3ch_v1.pth from Zenodo record 4665863."
    )


def test_command_refuses_a_network_of_another_layout(tmp_path, capsys):
    source = tmp_path / "dpn_unet_cell_3ch_v1.pth"
    save_as_pytorch_zoo(source, small_zoo_model)
    assert main(["convert-hpa-weights", str(source), str(tmp_path / "out.pt")]) == 2
    assert "dpn_unet_cell_3ch_v1.pth is not the HPA DPN-92 U-Net" in capsys.readouterr().err
    assert not (tmp_path / "out.pt").exists()


def test_kind_comes_from_the_file_name_or_must_be_given(tmp_path):
    source = tmp_path / "weights.pth"
    save_as_pytorch_zoo(source, small_zoo_model)
    with pytest.raises(WeightFileError, match="pass --kind nuclei or --kind cell"):
        convert(source, tmp_path / "out.pt")


def full_zoo_network(classes: dict[str, type]) -> nn.Module:
    torch.manual_seed(0)
    return as_pytorch_zoo(dpnunet.DPNUnet(), classes)


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
