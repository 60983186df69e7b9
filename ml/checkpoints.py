"""Model checkpoints as plain data, readable with `torch.load(..., weights_only=True)`.

After timm's `_helpers.py`: a saver and a loader per kind of model over one shared step,
`_read_checkpoint`, which checks what every checkpoint must be (an existing file that loads
with `weights_only=True`, a dict with the kind's keys, of the format version this release
reads) and says in a sentence what was wrong. Both kinds hold everything needed to rebuild and
feed their model, so serving derives its preprocessing from the file and cannot drift from
training:

- the cell classifier (`save_classifier_checkpoint`, `load_classifier_checkpoint`, `build_classifier`):
  {"model": state_dict, "config": {"architecture": "cell-classifier", "widths", "input_size_px",
  "mean", "std", "blend_cell_weight", "image_pooling", "dropout"}, "class_names", "mean", "std",
  "version", "metrics", "data", "name"}, written by `python -m ml train`; a timm backbone has
  "architecture": "timm-cell-classifier" and "backbone" (its timm name; "widths" is then empty), and
  new checkpoints record "preprocessing" (`PREPROCESSING`: how crops are made and scaled, which
  serving checks it can do; a file without it was made the same way), and optionally
  "familiarity" (`ml.classifier.familiarity`: a description of the training cells, checked on
  loading, added to an existing file by `add_familiarity`), "summary", "card" and "model_version";
- the segmentation U-Nets (`save_unet_checkpoint`, `load_unet_checkpoint`):
  {"model": state_dict, "config": `ml.segmentation.hpa.config.unet_config(...)`, "version",
  "name", "metrics", "source"}, written by `python -m ml convert-hpa-weights` or
  `python -m ml train-seg`.

`save_atomically` writes either kind so that an interrupted save never leaves half a file.
"""

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ml.classifier.familiarity import Familiarity, single_layer_block_as_layers
from ml.classifier.network import BackboneCellClassifier, CellClassifier
from ml.constants import CHANNELS, CLASS_NAMES
from ml.segmentation.hpa.config import UNET_ARCHITECTURE, build_unet
from ml.segmentation.hpa.network import DPNUnet

CHECKPOINT_VERSION = 1  # the format version this release writes and reads, of both kinds
CLASSIFIER_ARCHITECTURE = "cell-classifier"  # the compact network (`CellClassifier`)
BACKBONE_ARCHITECTURE = "timm-cell-classifier"  # a timm backbone (`BackboneCellClassifier`), config "backbone"
# How serving turns a field into the network's input; the only way this release knows: each cell
# cropped alone (neighbours masked out), centred on a square, resized bilinearly to input_size_px,
# channels in CHANNELS order scaled to [0, 1], then (x - mean) / std per channel.
PREPROCESSING = {"crop": "masked-square-bilinear", "channels": list(CHANNELS), "scale": "unit", "normalize": "mean-std"}
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


class CheckpointError(ValueError):
    """A model file cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class _Kind:
    """What the shared read step requires of one kind of checkpoint, and how its sentences end."""

    name: str  # as in "x.pt is not an hpaweb classifier checkpoint"
    required_keys: tuple[str, ...]
    how_to_get_one: str
    version_remedy: str  # for a file of another format version
    # Said of a file torch.load cannot read instead of torch's own reason, when that reason is
    # known better than torch can say it.
    unreadable_hint: str | None = None


_CLASSIFIER = _Kind(
    name="classifier",
    required_keys=("model", "config", "class_names", "version"),
    how_to_get_one="pass a checkpoint written by `python -m ml train`",
    version_remedy="retrain the model with this release or use the release that wrote it",
)
_UNET = _Kind(
    name="segmentation",
    required_keys=("model", "config", "version"),
    how_to_get_one=(
        "convert the official HPA weights with `python -m ml convert-hpa-weights SRC DST` "
        "or train one with `python -m ml train-seg`"
    ),
    version_remedy="convert or train it again with this release",
    # weights_only loading refuses the official files, which are whole pickled modules.
    unreadable_hint="an official HPA .pth file must be converted first",
)


def save_classifier_checkpoint(
    path: str | Path,
    *,
    model: nn.Module,
    config: dict,
    metrics: dict,
    data: dict,
    name: str | None = None,
    familiarity: Familiarity | None = None,
) -> None:
    """Write a classifier checkpoint; `name` (shown to users) defaults to the file name without suffix."""
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
    if familiarity is not None:
        checkpoint["familiarity"] = familiarity.to_plain()
    save_atomically(checkpoint, path)


def load_classifier_checkpoint(path: str | Path) -> tuple[nn.Module, dict]:
    """Load a classifier checkpoint; returns (model in eval mode on the CPU, the checkpoint without "model").

    The checkpoint's "familiarity" comes back as a `Familiarity` (None when the file has none).
    """
    path = Path(path)
    checkpoint = _read_checkpoint(path, _CLASSIFIER, file_description="model file")
    config = checkpoint["config"]
    _validate_config(config, source=path.name)
    if list(checkpoint["class_names"]) != list(CLASS_NAMES):
        raise CheckpointError(
            f"{path.name} predicts other classes than the 19 HPA classes; {_CLASSIFIER.how_to_get_one}."
        )
    model = build_classifier(config)
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as error:
        shape = (
            f"backbone {config['backbone']}"
            if config["architecture"] == BACKBONE_ARCHITECTURE
            else (f"widths {list(config['widths'])}")
        )
        raise CheckpointError(
            f"The weights in {path.name} do not fit a cell classifier with {shape} "
            f"({first_line(error)}); the file is damaged or its config does not match its weights."
        ) from None
    model.eval()
    info = {key: value for key, value in checkpoint.items() if key != "model"}
    info.setdefault("name", path.stem)
    info["familiarity"] = _read_familiarity(checkpoint.get("familiarity"), model=model, source=path.name)
    return model, info


def add_familiarity(path: str | Path, *, familiarity: Familiarity, out: str | Path | None = None) -> None:
    """Write the checkpoint at `path` with `familiarity` as its description of its training
    cells, to `out` (default: in place); its weights and everything else stay as they are."""
    path = Path(path)
    checkpoint = _read_checkpoint(path, _CLASSIFIER, file_description="model file")
    _validate_config(checkpoint["config"], source=path.name)
    checkpoint["familiarity"] = familiarity.to_plain()
    _read_familiarity(checkpoint["familiarity"], model=build_classifier(checkpoint["config"]), source=path.name)
    save_atomically(checkpoint, Path(out) if out is not None else path)


def build_classifier(config: Mapping) -> CellClassifier | BackboneCellClassifier:
    """The untrained cell classifier a config describes."""
    if config["architecture"] == BACKBONE_ARCHITECTURE:
        return BackboneCellClassifier(config["backbone"], in_channels=len(CHANNELS), dropout=float(config["dropout"]))
    return CellClassifier(in_channels=len(CHANNELS), widths=tuple(config["widths"]), dropout=float(config["dropout"]))


def save_unet_checkpoint(
    path: str | Path,
    *,
    state_dict: Mapping[str, torch.Tensor],
    config: Mapping,
    metrics: Mapping | None = None,
    source: Mapping | None = None,
    name: str | None = None,
) -> None:
    """Write a segmentation checkpoint; `source` records where the weights came from."""
    path = Path(path)
    checkpoint = {
        "model": {key: tensor.detach().cpu().contiguous() for key, tensor in state_dict.items()},
        "config": dict(config),
        "version": CHECKPOINT_VERSION,
        "name": name or path.stem,
        "metrics": dict(metrics or {}),
        "source": dict(source or {}),
    }
    save_atomically(checkpoint, path)


def load_unet_checkpoint(path: str | Path | None, *, kind: str) -> tuple[DPNUnet, dict]:
    """Load a segmentation checkpoint of `kind`; returns (model in eval mode on the CPU, its info)."""
    if path is None:
        raise CheckpointError(f"The unet segmentation backend needs {kind} network weights; {_UNET.how_to_get_one}.")
    path = Path(path)
    checkpoint = _read_checkpoint(path, _UNET, file_description=f"{kind} network weight file")
    config = checkpoint["config"]
    if not isinstance(config, Mapping) or config.get("architecture") != UNET_ARCHITECTURE:
        found = config.get("architecture") if isinstance(config, Mapping) else None
        raise CheckpointError(
            f"{path.name} holds a {found!r} model, not a {UNET_ARCHITECTURE!r} segmentation network; "
            f"{_UNET.how_to_get_one}."
        )
    if config.get("kind") != kind:
        raise CheckpointError(
            f"{path.name} holds the {config.get('kind')} network but was given as the {kind} network; "
            "swap the nuclei and cell weight paths."
        )
    try:
        model = build_unet(config)
        model.load_state_dict(checkpoint["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(
            f"The weights in {path.name} do not fit the network its config describes ({first_line(error)}); "
            "the file is damaged; convert or train it again."
        ) from None
    model.eval()
    info = {key: value for key, value in checkpoint.items() if key != "model"}
    return model, info


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


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type when it has none), for a sentence."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _read_checkpoint(path: Path, kind: _Kind, *, file_description: str) -> dict:
    """The checkpoint dict at `path`, once it is certain to be a checkpoint of `kind` and of
    this release's format version; a CheckpointError with a sentence otherwise."""
    if not path.is_file():
        raise CheckpointError(f"There is no {file_description} at {path}; {kind.how_to_get_one}.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - a pickled module, or arbitrary bytes, fail in arbitrary ways
        reason = f"({kind.unreadable_hint})" if kind.unreadable_hint else f"or is damaged ({first_line(error)})"
        raise CheckpointError(
            f"{path.name} is not an hpaweb {kind.name} checkpoint {reason}; {kind.how_to_get_one}."
        ) from None
    missing = [key for key in kind.required_keys if not isinstance(checkpoint, dict) or key not in checkpoint]
    if missing:
        raise CheckpointError(
            f"{path.name} is not an hpaweb {kind.name} checkpoint (it has no {missing[0]!r} entry); "
            f"{kind.how_to_get_one}."
        )
    if checkpoint["version"] != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path.name} is checkpoint format version {checkpoint['version']}, but this hpaweb reads version "
            f"{CHECKPOINT_VERSION}; {kind.version_remedy}."
        )
    return checkpoint


def _read_familiarity(block: object, *, model: CellClassifier, source: str) -> Familiarity | None:
    """The familiarity a checkpoint holds (None when it has none), once it fits the model's
    layers. A block of the earlier single-layer method describes the model's last layer."""
    if block is None:
        return None
    try:
        familiarity = Familiarity.from_plain(single_layer_block_as_layers(block, layer=model.layer_names[-1]))
    except ValueError as error:
        problem = str(error)
    else:
        problem = _layers_problem(familiarity.layer_sizes, model.layer_sizes)
        if problem is None:
            return familiarity
    raise CheckpointError(
        f"{source} has an unusable familiarity block: {problem}; fit it again with "
        "`python -m ml fit-familiarity --model CKPT --data DIR` (the model's training data)."
    )


def _layers_problem(described: Mapping[str, int], model_sizes: Mapping[str, int]) -> str | None:
    for name, size in described.items():
        if name not in model_sizes:
            return f"it describes layer {name!r}, which the model does not have ({', '.join(model_sizes)})"
        if size != model_sizes[name]:
            return f"it describes {size} features in layer {name}, the model gives {model_sizes[name]}"
    return None


def _validate_config(config: Mapping, *, source: str) -> None:
    try:
        problem = _config_problem(config)
    except (TypeError, ValueError):
        problem = "a value has the wrong type"
    if problem:
        raise CheckpointError(f"{source} has an unusable model config: {problem}; {_CLASSIFIER.how_to_get_one}.")


def _config_problem(config: Mapping) -> str | None:
    if not isinstance(config, Mapping):
        return "it is not a mapping"
    missing = [key for key in CONFIG_KEYS if key not in config]
    if missing:
        return f"{', '.join(missing)} missing"
    if config["architecture"] not in (CLASSIFIER_ARCHITECTURE, BACKBONE_ARCHITECTURE):
        return (
            f"architecture {config['architecture']!r} is not {CLASSIFIER_ARCHITECTURE!r} or {BACKBONE_ARCHITECTURE!r}"
        )
    if config["architecture"] == BACKBONE_ARCHITECTURE:
        import timm

        if not isinstance(config.get("backbone"), str) or not timm.is_model(config["backbone"]):
            return f"backbone {config.get('backbone')!r} is not a timm model this installation knows"
    if "preprocessing" in config and dict(config["preprocessing"]) != PREPROCESSING:
        return f"preprocessing {dict(config['preprocessing'])} is not the one this release serves ({PREPROCESSING})"
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
