"""An official HPA segmentation weight file -> a plain-data segmentation checkpoint.

`convert(source, destination)` backs `python -m ml convert-hpa-weights` (`ml.cli.convert_hpa_weights`).
The official files (Zenodo record 4665863) are whole pickled `pytorch_zoo.unet.DPNUnet`
modules, which plain `torch.load` can only open with that old package installed and by running
whatever code the pickle names. Here the pickle is read by an unpickler that knows a fixed list
of class names (those of DPNUnet, its torch layers, and DataParallel), maps each onto an inert
stand-in that only stores attributes, and refuses any other name. Only the tensors are kept;
they are checked against `DPNUnet`'s layout and written as a plain-data checkpoint that loads
with `weights_only=True`.
"""

import hashlib
import pickle
import types
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import _utils as torch_utils

from ml.checkpoints import first_line, save_unet_checkpoint
from ml.segmentation.hpa.config import unet_config
from ml.segmentation.hpa.network import DPNUnet

# Classes an official file may name: the DPNUnet modules, the torch layers they use and the
# DataParallel wrapper some trainings save. They become `_PickledModule` stand-ins.
MODULE_CLASSES: frozenset[str] = frozenset(
    {
        "pytorch_zoo.unet.DPNUnet",
        "pytorch_zoo.abstract_model.ConvBottleneck",
        "pytorch_zoo.abstract_model.UnetDecoderBlock",
        "pytorch_zoo.dpn.DualPathBlock",
        "pytorch_zoo.dpn.BnActConv2d",
        "pytorch_zoo.dpn.CatBnAct",
        "torch.nn.modules.conv.Conv2d",
        "torch.nn.modules.batchnorm.BatchNorm2d",
        "torch.nn.modules.activation.ReLU",
        "torch.nn.modules.pooling.MaxPool2d",
        "torch.nn.modules.upsampling.Upsample",
        "torch.nn.modules.container.Sequential",
        "torch.nn.modules.container.ModuleList",
        "torch.nn.parallel.data_parallel.DataParallel",
    }
)
# Plain callables the pickle needs to rebuild tensors and containers. (Storage classes such as
# torch.FloatStorage or torch.cuda.FloatStorage never reach the unpickler: torch.load maps them
# to dtypes itself.)
_FUNCTIONS: dict[str, object] = {
    "torch._utils._rebuild_tensor_v2": torch_utils._rebuild_tensor_v2,
    "torch._utils._rebuild_parameter": torch_utils._rebuild_parameter,
    "collections.OrderedDict": OrderedDict,
    "__builtin__.set": set,
    "builtins.set": set,
}
_DATA_PARALLEL_PREFIX = "module."


class WeightFileError(ValueError):
    """An official weight file cannot be converted; the message says why and what to do."""


class _PickledModule:
    """Stands in for a pickled nn.Module: keeps the attributes the pickle sets, runs nothing."""

    def __setstate__(self, state) -> None:
        if isinstance(state, tuple):  # (dict, slots) from objects with __slots__
            state = {key: value for part in state if part for key, value in part.items()}
        self.__dict__.update(state)


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        path = f"{module}.{name}"
        if path in MODULE_CLASSES:
            return _PickledModule
        if path in _FUNCTIONS:
            return _FUNCTIONS[path]
        raise WeightFileError(
            f"The weight file names {path}, which is not part of the HPA DPN-U-Net, so it was not loaded "
            "(nothing in the file was run); pass dpn_unet_nuclei_v1.pth or dpn_unet_cell_3ch_v1.pth from "
            "Zenodo record 4665863."
        )


def _restricted_load(file, **kwargs):
    return _RestrictedUnpickler(file, **kwargs).load()


# torch.load takes any object with `Unpickler` and `load` as its pickle module; every global of
# the file then goes through `_RestrictedUnpickler.find_class`.
_restricted_pickle = types.ModuleType("hpaweb_restricted_pickle")
_restricted_pickle.Unpickler = _RestrictedUnpickler
_restricted_pickle.load = _restricted_load


def read_official_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The state_dict of an official weight file, and facts about the pickled module."""
    path = Path(path)
    if not path.is_file():
        raise WeightFileError(f"There is no weight file at {path}; download it from Zenodo record 4665863.")
    try:
        root = torch.load(path, map_location="cpu", pickle_module=_restricted_pickle, weights_only=False)
    except WeightFileError:
        raise
    except Exception as error:  # noqa: BLE001 - damaged or foreign files fail in many ways
        raise WeightFileError(
            f"{path.name} could not be read as a pickled PyTorch module ({first_line(error)}); "
            "pass an official HPA segmentation weight file."
        ) from None
    if not isinstance(root, _PickledModule):
        raise WeightFileError(
            f"{path.name} holds a {type(root).__name__}, not a pickled DPN-U-Net module; "
            "pass an official HPA segmentation weight file."
        )
    state_dict = {key: tensor.detach() for key, tensor in _module_tensors(root).items()}
    data_parallel = bool(state_dict) and all(key.startswith(_DATA_PARALLEL_PREFIX) for key in state_dict)
    if data_parallel:
        state_dict = {key[len(_DATA_PARALLEL_PREFIX) :]: tensor for key, tensor in state_dict.items()}
        root = root.__dict__["_modules"]["module"]
    facts = {"data_parallel": data_parallel, "saved_in_training_mode": bool(root.__dict__.get("training", False))}
    return state_dict, facts


def check_layout(state_dict: Mapping[str, torch.Tensor], *, source: str) -> None:
    """Raise WeightFileError with a sentence unless the tensors are exactly DPNUnet's (DPN-92)."""
    with torch.device("meta"):
        expected = {key: tuple(tensor.shape) for key, tensor in DPNUnet().state_dict().items()}
    found = {key: tuple(tensor.shape) for key, tensor in state_dict.items()}
    missing = sorted(expected.keys() - found.keys())
    unexpected = sorted(found.keys() - expected.keys())
    reshaped = sorted(key for key in expected.keys() & found.keys() if expected[key] != found[key])
    if not (missing or unexpected or reshaped):
        return
    problems = []
    if missing:
        problems.append(f"{len(missing)} weights missing (such as {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unknown weights (such as {unexpected[0]})")
    if reshaped:
        key = reshaped[0]
        problems.append(
            f"{len(reshaped)} weights of another shape (such as {key}: {list(found[key])}, expected {list(expected[key])})"
        )
    raise WeightFileError(
        f"{source} is not the HPA DPN-92 U-Net: {'; '.join(problems)}; pass dpn_unet_nuclei_v1.pth or "
        "dpn_unet_cell_3ch_v1.pth from Zenodo record 4665863."
    )


def convert(source: str | Path, destination: str | Path, *, kind: str | None = None) -> dict:
    """Convert an official weight file to a segmentation checkpoint; returns the checkpoint's config."""
    source, destination = Path(source), Path(destination)
    kind = kind or _kind_from_name(source)
    state_dict, facts = read_official_weights(source)
    check_layout(state_dict, source=source.name)
    config = unet_config(kind)
    with source.open("rb") as file:
        digest = hashlib.file_digest(file, "sha256").hexdigest()
    save_unet_checkpoint(
        destination,
        state_dict=state_dict,
        config=config,
        source={"file": source.name, "sha256": digest, **facts},
    )
    return config


def _module_tensors(module: _PickledModule, prefix: str = "") -> dict[str, torch.Tensor]:
    """What nn.Module.state_dict() would return: parameters, persistent buffers, then children."""
    attributes = module.__dict__
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in attributes.get("_parameters", {}).items():
        if tensor is not None:
            tensors[prefix + name] = tensor
    non_persistent = attributes.get("_non_persistent_buffers_set", set())
    for name, tensor in attributes.get("_buffers", {}).items():
        if tensor is not None and name not in non_persistent:
            tensors[prefix + name] = tensor
    for name, child in attributes.get("_modules", {}).items():
        if isinstance(child, _PickledModule):
            tensors.update(_module_tensors(child, f"{prefix}{name}."))
    return tensors


def _kind_from_name(path: Path) -> str:
    name = path.name.lower()
    if "nucle" in name:
        return "nuclei"
    if "cell" in name:
        return "cell"
    raise WeightFileError(
        f"Cannot tell from the name {path.name} whether it holds the nuclei or the cell network; "
        "pass --kind nuclei or --kind cell."
    )
