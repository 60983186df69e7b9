"""The `unet` segmentation backend: HPA-compatible DPN-U-Nets plus the HPA post-processing.

Two networks, each from a checkpoint written by `python -m ml convert-hpa-weights` (the
official HPA weights) or `python -m ml train-seg` and loaded by `ml.checkpoints`: the nuclei
network reads the blue channel, the cell network (red, yellow, blue). Their inputs and outputs
are prepared as hpacellseg does (`preprocess`), with the scale, mean and std of each
checkpoint's config; their softmax maps become label images with `postprocess.label_cell`;
cells without a nucleus are dropped and the rest numbered 1..N, each nucleus carrying its
cell's id.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ml.checkpoints import load_unet_checkpoint
from ml.device import resolve_device
from ml.io import FieldImages
from ml.segmentation.base import Segmentation
from ml.segmentation.hpa.postprocess import label_cell
from ml.segmentation.hpa.preprocess import (
    NUCLEI_INPUT_CHANNELS,
    downscale,
    input_channels,
    pad_and_normalise,
    restore_prediction,
)

DEFAULT_BATCH_SIZE = 4


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

    def _predict(
        self, fields: Sequence[FieldImages], names: Sequence[tuple[str, ...]], *, kind: str
    ) -> list[np.ndarray]:
        """uint8 (H, W, 3) prediction maps of one network for every field."""
        model, config = self.networks[kind]
        inputs = []
        for field, field_names in zip(fields, names, strict=True):
            scaled = {name: downscale(getattr(field, name), config["scale_factor"]) for name in set(field_names)}
            inputs.append(
                pad_and_normalise(
                    [scaled[name] for name in field_names],
                    field_shape=field.shape,
                    mean=config["mean"],
                    std=config["std"],
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
