"""Stand-ins for the official HPA weight files: whole DPN-U-Net modules pickled under the
class names of `pytorch_zoo`, a package these tests never install."""

import sys
import types
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ml.segmentation.hpa import network

ZOO_CLASSES = {  # pytorch_zoo class -> the module of ours that has its layout
    "pytorch_zoo.unet.DPNUnet": network.DPNUnet,
    "pytorch_zoo.abstract_model.ConvBottleneck": network.SkipMerge,
    "pytorch_zoo.abstract_model.UnetDecoderBlock": network.UpsampleConv,
    "pytorch_zoo.dpn.DualPathBlock": network.DualPathBlock,
    "pytorch_zoo.dpn.BnActConv2d": network.PreActConv,
    "pytorch_zoo.dpn.CatBnAct": network.CatBnAct,
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
    model = network.DPNUnet(
        stem_channels=8,
        blocks=(1, 1, 1, 1),
        residual_channels=(8, 8, 8, 8),
        bottleneck_channels=(4, 4, 4, 4),
        dense_increments=(2, 2, 2, 2),
        groups=2,
    )
    model.encoder_stages[0][1].running_mean.uniform_()  # buffers must come through too
    return as_pytorch_zoo(model, classes)


def full_zoo_network(classes: dict[str, type]) -> nn.Module:
    torch.manual_seed(0)
    return as_pytorch_zoo(network.DPNUnet(), classes)


def assert_same_tensors(found: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert list(found) == list(expected)
    for key, tensor in expected.items():
        assert found[key].dtype == tensor.dtype
        assert torch.equal(found[key], tensor), key
