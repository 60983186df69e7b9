"""Classifier checkpoints as plain data, readable with `torch.load(..., weights_only=True)`.

A checkpoint holds the state_dict and everything needed to rebuild and feed the model (its
config: architecture, widths, input size, normalisation, blending), so serving derives its
preprocessing from the file and cannot drift from training.
"""

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ml.constants import CHANNELS, CLASS_NAMES
from ml.classifier.network import CellClassifier

CHECKPOINT_VERSION = 1
ARCHITECTURE = "cell-classifier"
CONFIG_KEYS: tuple[str, ...] = (
    "architecture",
    "widths",
    "input_size_px",
    "mean",
    "std",
    "blend_cell_weight",
    "image_pooling",
    "dropout",
)
IMAGE_POOLINGS: tuple[str, ...] = ("mean", "max")

_HOW_TO_GET_ONE = "pass a checkpoint written by `python -m ml train`"


class CheckpointError(ValueError):
    """A model file cannot be used; the message says why and what to do."""


def save_checkpoint(
    path: str | Path, *, model: nn.Module, config: dict, metrics: dict, data: dict, name: str | None = None
) -> None:
    """Write a checkpoint; `name` (shown to users) defaults to the file name without suffix."""
    path = Path(path)
    _validate_config(config, source="The config to save")
    checkpoint = {
        "model": {key: tensor.detach().cpu() for key, tensor in model.state_dict().items()},
        "config": _plain(config),
        "class_names": list(CLASS_NAMES),
        "mean": _plain(config["mean"]),
        "std": _plain(config["std"]),
        "version": CHECKPOINT_VERSION,
        "metrics": _plain(metrics),
        "data": _plain(data),
        "name": name or path.stem,
    }
    save_atomically(checkpoint, path)


def save_atomically(checkpoint: dict, path: Path) -> None:
    """`torch.save` beside the target, then rename: an interrupted save never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as file:
        temporary = Path(file.name)
    try:
        torch.save(checkpoint, temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict]:
    """Load a checkpoint; returns (model in eval mode on the CPU, the checkpoint without "model")."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"There is no model file at {path}; {_HOW_TO_GET_ONE}.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # arbitrary bytes make torch.load fail in arbitrary ways
        raise CheckpointError(
            f"{path.name} is not an hpaweb classifier checkpoint or is damaged ({_first_line(error)}); "
            f"{_HOW_TO_GET_ONE}."
        ) from None
    if not isinstance(checkpoint, dict):
        checkpoint = {}
    missing = [key for key in ("model", "config", "class_names", "version") if key not in checkpoint]
    if missing:
        raise CheckpointError(
            f"{path.name} is not an hpaweb classifier checkpoint (it has no {missing[0]!r} entry); {_HOW_TO_GET_ONE}."
        )
    if checkpoint["version"] != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path.name} is checkpoint format version {checkpoint['version']}, but this hpaweb reads version "
            f"{CHECKPOINT_VERSION}; retrain the model with this release or use the release that wrote it."
        )
    config = checkpoint["config"]
    _validate_config(config, source=path.name)
    if list(checkpoint["class_names"]) != list(CLASS_NAMES):
        raise CheckpointError(f"{path.name} predicts other classes than the 19 HPA classes; {_HOW_TO_GET_ONE}.")
    model = build_model(config)
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as error:
        raise CheckpointError(
            f"The weights in {path.name} do not fit a cell classifier with widths {list(config['widths'])} "
            f"({_first_line(error)}); the file is damaged or its config does not match its weights."
        ) from None
    model.eval()
    info = {key: value for key, value in checkpoint.items() if key != "model"}
    info.setdefault("name", path.stem)
    return model, info


def build_model(config: Mapping) -> CellClassifier:
    """The untrained network a config describes."""
    return CellClassifier(
        in_channels=len(CHANNELS), widths=tuple(config["widths"]), dropout=float(config["dropout"])
    )


def _validate_config(config: Mapping, *, source: str) -> None:
    try:
        problem = _config_problem(config)
    except (TypeError, ValueError):
        problem = "a value has the wrong type"
    if problem:
        raise CheckpointError(f"{source} has an unusable model config: {problem}; {_HOW_TO_GET_ONE}.")


def _config_problem(config: Mapping) -> str | None:
    if not isinstance(config, Mapping):
        return "it is not a mapping"
    missing = [key for key in CONFIG_KEYS if key not in config]
    if missing:
        return f"{', '.join(missing)} missing"
    if config["architecture"] != ARCHITECTURE:
        return f"architecture {config['architecture']!r} is not {ARCHITECTURE!r}"
    if config["image_pooling"] not in IMAGE_POOLINGS:
        return f"image_pooling {config['image_pooling']!r} is not one of {', '.join(IMAGE_POOLINGS)}"
    if not 0.0 <= float(config["blend_cell_weight"]) <= 1.0:
        return f"blend_cell_weight {config['blend_cell_weight']} is outside 0..1"
    for key in ("mean", "std"):
        if len(config[key]) != len(CHANNELS):
            return f"{key} has {len(config[key])} values instead of one per channel ({len(CHANNELS)})"
    if any(float(value) <= 0 for value in config["std"]):
        return "std has a value that is not positive"
    if int(config["input_size_px"]) < 32:
        return f"input_size_px {config['input_size_px']} is below 32"
    return None


def _plain(value):
    """Numbers, strings, lists and dicts only: what `weights_only=True` loading accepts."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"Checkpoint metadata must be plain data; {type(value).__name__} is not.")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
