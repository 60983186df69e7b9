"""The `unet` segmentation backend: HPA-compatible DPN-U-Nets plus the HPA post-processing.

Two networks, each from a checkpoint written by `python -m ml convert-hpa-weights` (the
official HPA weights) or `python -m ml train-seg`: the nuclei network reads the blue channel,
the cell network (red, yellow, blue). Their softmax maps become label images with
`hpa_postprocess.label_cell`; cells without a nucleus are dropped and the rest numbered 1..N,
each nucleus carrying its cell's id.

Segmentation checkpoints are plain data, like the classifier's:
{"model": state_dict, "config": {"architecture": "dpn92-unet", "kind": "nuclei" | "cell",
"input_channels", "scale_factor", "mean", "std", "encoder": {...}}, "version": 1, "name",
"metrics", "source"}; preprocessing is read from the config.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ml.checkpoints import CHECKPOINT_VERSION, CheckpointError, save_atomically
from ml.device import resolve_device
from ml.io import FieldImages
from ml.segmentation import Segmentation
from ml.segmentation.dpnunet import DPNUnet
from ml.segmentation.hpa_postprocess import label_cell
from ml.segmentation.hpa_preprocess import (
    CELL_INPUT_CHANNELS,
    KINDS,
    MEAN,
    NUCLEI_INPUT_CHANNELS,
    SCALE_FACTOR,
    STD,
    downscale,
    input_channels,
    pad_and_normalise,
    restore_prediction,
)

ARCHITECTURE = "dpn92-unet"
# DPN-92, the encoder of the official weights; smaller values keep the topology.
DPN92_ENCODER: dict[str, int | list[int]] = {
    "stem_channels": 64,
    "blocks": [3, 4, 20, 3],
    "residual_channels": [256, 512, 1024, 2048],
    "bottleneck_channels": [96, 192, 384, 768],
    "dense_increments": [16, 32, 24, 128],
    "groups": 32,
}
OUTPUT_CLASSES: tuple[str, ...] = ("unused", "border", "foreground")
DEFAULT_BATCH_SIZE = 4

_HOW_TO_GET_ONE = (
    "convert the official HPA weights with `python -m ml convert-hpa-weights SRC DST` "
    "or train one with `python -m ml train-seg`"
)


def unet_config(kind: str, *, encoder: Mapping | None = None) -> dict:
    """The config of a segmentation network of `kind` ("nuclei" or "cell"); DPN-92 by default."""
    if kind not in KINDS:
        raise ValueError(f"Unknown segmentation network kind {kind!r}; use one of {', '.join(KINDS)}.")
    return {
        "architecture": ARCHITECTURE,
        "kind": kind,
        "input_channels": list(NUCLEI_INPUT_CHANNELS if kind == "nuclei" else CELL_INPUT_CHANNELS),
        "output_classes": list(OUTPUT_CLASSES),
        "scale_factor": SCALE_FACTOR,
        "mean": list(MEAN),
        "std": list(STD),
        "encoder": {key: value for key, value in (encoder or DPN92_ENCODER).items()},
    }


def build_unet(config: Mapping) -> DPNUnet:
    """The untrained network a config describes."""
    encoder = config["encoder"]
    return DPNUnet(
        in_channels=len(config["input_channels"]),
        num_classes=len(config["output_classes"]),
        stem_channels=int(encoder["stem_channels"]),
        blocks=tuple(encoder["blocks"]),
        residual_channels=tuple(encoder["residual_channels"]),
        bottleneck_channels=tuple(encoder["bottleneck_channels"]),
        dense_increments=tuple(encoder["dense_increments"]),
        groups=int(encoder["groups"]),
    )


def save_unet_checkpoint(
    path: str | Path,
    *,
    state_dict: Mapping[str, torch.Tensor],
    config: Mapping,
    metrics: Mapping | None = None,
    source: Mapping | None = None,
    name: str | None = None,
) -> None:
    """Write a segmentation checkpoint (atomically: an interrupted save leaves no half file)."""
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
        raise CheckpointError(f"The unet segmentation backend needs {kind} network weights; {_HOW_TO_GET_ONE}.")
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"There is no {kind} network weight file at {path}; {_HOW_TO_GET_ONE}.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a pickled module, or arbitrary bytes, fail in arbitrary ways
        raise CheckpointError(
            f"{path.name} is not an hpaweb segmentation checkpoint (an official HPA .pth file must be "
            f"converted first); {_HOW_TO_GET_ONE}."
        ) from None
    if not isinstance(checkpoint, dict) or not {"model", "config", "version"} <= checkpoint.keys():
        raise CheckpointError(f"{path.name} is not an hpaweb segmentation checkpoint; {_HOW_TO_GET_ONE}.")
    if checkpoint["version"] != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path.name} is checkpoint format version {checkpoint['version']}, but this hpaweb reads version "
            f"{CHECKPOINT_VERSION}; convert or train it again with this release."
        )
    config = checkpoint["config"]
    if not isinstance(config, Mapping) or config.get("architecture") != ARCHITECTURE:
        found = config.get("architecture") if isinstance(config, Mapping) else None
        raise CheckpointError(
            f"{path.name} holds a {found!r} model, not a {ARCHITECTURE!r} segmentation network; {_HOW_TO_GET_ONE}."
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
            f"The weights in {path.name} do not fit the network its config describes ({_first_line(error)}); "
            "the file is damaged; convert or train it again."
        ) from None
    model.eval()
    info = {key: value for key, value in checkpoint.items() if key != "model"}
    return model, info


class UnetBackend:
    """Segments fields with the nuclei and cell networks; load once, reuse for every field.

    On a GPU, fields of one size go through the networks `batch_size` at a time in bfloat16
    (float16 where bfloat16 is missing), channels-last; on the CPU in float32.
    """

    def __init__(
        self,
        *,
        nuclei_weights: str | Path | None,
        cell_weights: str | Path | None,
        device: str = "cpu",
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.networks: dict[str, tuple[nn.Module, dict]] = {}
        for kind, weights in (("nuclei", nuclei_weights), ("cell", cell_weights)):
            model, info = load_unet_checkpoint(weights, kind=kind)
            self.networks[kind] = (model.to(self.device, memory_format=torch.channels_last), info["config"])

    def segment(self, field: FieldImages) -> Segmentation:
        return self.segment_batch([field])[0]

    def segment_batch(self, fields: Sequence[FieldImages]) -> list[Segmentation]:
        channels = [input_channels(field, kind="cell") for field in fields]
        nuclei_maps = self._predict(fields, [NUCLEI_INPUT_CHANNELS] * len(fields), kind="nuclei")
        cell_maps = self._predict(fields, [names for names, _ in channels], kind="cell")
        segmentations = []
        for nuclei_map, cell_map, (_, used) in zip(nuclei_maps, cell_maps, channels, strict=True):
            nuclei_labels, cell_labels = number_cells_with_nuclei(*label_cell(nuclei_map, cell_map))
            segmentations.append(
                Segmentation(nuclei_labels=nuclei_labels, cell_labels=cell_labels, backend="unet", channels_used=used)
            )
        return segmentations

    def _predict(self, fields: Sequence[FieldImages], names: Sequence[tuple[str, ...]], *, kind: str) -> list[np.ndarray]:
        """uint8 (H, W, 3) prediction maps of one network for every field."""
        model, config = self.networks[kind]
        inputs = []
        for field, field_names in zip(fields, names, strict=True):
            scaled = {name: downscale(getattr(field, name), config["scale_factor"]) for name in set(field_names)}
            inputs.append(
                pad_and_normalise(
                    [scaled[name] for name in field_names], field_shape=field.shape, mean=config["mean"], std=config["std"]
                )
            )
        maps: list[np.ndarray | None] = [None] * len(fields)
        by_size: dict[tuple[int, ...], list[int]] = {}
        for index, network_input in enumerate(inputs):
            by_size.setdefault(network_input.image.shape, []).append(index)
        for indices in by_size.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                probabilities = self._softmax(model, np.stack([inputs[index].image for index in chunk]))
                for index, field_probabilities in zip(chunk, probabilities, strict=True):
                    maps[index] = restore_prediction(field_probabilities, network_input=inputs[index], kind=kind)
        return maps

    @torch.inference_mode()
    def _softmax(self, model: nn.Module, images: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(images).to(self.device).contiguous(memory_format=torch.channels_last)
        if self.device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            with torch.autocast(device_type="cuda", dtype=dtype):
                logits = model(batch)
        else:
            logits = model(batch)
        return torch.softmax(logits.float(), dim=1).cpu().numpy()


def number_cells_with_nuclei(nuclei_labels: np.ndarray, cell_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep the cells that hold a nucleus, numbered 1..N in their order; uint16 (nuclei, cells).

    `nuclei_labels` carries the id of the containing cell, as `label_cell` returns it.
    """
    has_nucleus = np.bincount(nuclei_labels.ravel(), minlength=int(cell_labels.max(initial=0)) + 1) > 0
    has_nucleus[0] = False
    new_ids = np.cumsum(has_nucleus) * has_nucleus
    if new_ids[-1] > np.iinfo(np.uint16).max:
        raise ValueError(f"A field with {new_ids[-1]} cells does not fit 16-bit label images.")
    new_ids = new_ids.astype(np.uint16)
    return new_ids[nuclei_labels], new_ids[cell_labels]


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
