"""The `bioimageio` segmentation backend: a nucleus and a cell package, then the HPA post-processing.

The HPA segmentation networks published on bioimage.io are the `unet` backend's networks in
another format, so their inputs are prepared as `ml.segmentation.hpa.preprocess` prepares them
(the nuclei package sees the blue channel, three times where it takes three channels; the cell
package red, yellow and blue; the field scaled by 0.25 and padded to a multiple of 32), except
that the normalisation is the package's declared pre-processing. Their outputs, either one map
with (background, border, foreground) channels or channels named for the border and the
foreground, become the uint8 maps `ml.segmentation.hpa.postprocess.label_cell` reads.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from bioimageio.spec.model.v0_5 import ChannelAxis, ParameterizedSize

from ml.bioimageio.classifier import normalise_name
from ml.bioimageio.package import ModelImportError, ModelPackage, open_package
from ml.bioimageio.runtime import Network, axis_ids, check_test_tensors, output_is_probability, run_package
from ml.device import resolve_device
from ml.io import FieldImages
from ml.segmentation.base import Segmentation
from ml.segmentation.hpa.backend import number_cells_with_nuclei
from ml.segmentation.hpa.postprocess import label_cell
from ml.segmentation.hpa.preprocess import (
    NUCLEI_INPUT_CHANNELS,
    PAD_PX,
    SCALE_FACTOR,
    downscale,
    input_channels,
    pad_and_normalise,
    restore_prediction,
)

BACKEND_NAME = "bioimageio"
_BORDER_NAMES = ("border", "borders", "boundary", "boundaries", "edge", "edges", "contour", "contours")
_FOREGROUND_NAMES = ("foreground", "fg", "mask", "nuclei", "nucleus", "cell", "cells", "body", "interior")


class SegmentationPackage:
    """One checked segmentation package (nuclei or cell), loaded into memory."""

    def __init__(self, package: ModelPackage, *, kind: str, device: str) -> None:
        self.kind = kind
        self.package = package
        self.name = package.name
        description = package.description
        if len(description.inputs) != 1:
            raise ModelImportError(
                f"The {kind} package {self.name} must take one input, not {len(description.inputs)}."
            )
        tensor = description.inputs[0]
        self.axes = axis_ids(tensor)
        if not set(self.axes) <= {"batch", "channel", "y", "x"} or not {"y", "x"} <= set(self.axes):
            raise ModelImportError(
                f"The {kind} package {self.name} takes an input with axes {', '.join(self.axes)}; "
                "a segmentation package must take a 2-D image (y, x, with optional batch and channel)."
            )
        by_id = {str(axis.id): axis for axis in tensor.axes}
        self.channel_count = len(by_id["channel"].channel_names) if "channel" in by_id else 1
        if self.channel_count not in (1, 3):
            raise ModelImportError(
                f"The {kind} package {self.name} takes {self.channel_count} channels; HPA segmentation "
                "networks take 3 (or 1 for the nucleus channel alone)."
            )
        self.sizes = {axis: by_id[axis].size for axis in ("y", "x")}
        self.border_channel, self.foreground_channel = _output_channels(package, kind=kind)
        self.network = Network(package, device=resolve_device(device))
        check_test_tensors(package, self.network)

    def prediction_map(self, field: FieldImages, names: Sequence[str]) -> np.ndarray:
        """uint8 (H, W, 3) [0, border, foreground] map of one field, as the `unet` backend makes it."""
        names = names if self.channel_count == 3 else names[-1:]
        scaled = {name: downscale(getattr(field, name), SCALE_FACTOR) for name in set(names)}
        network_input = pad_and_normalise(
            [scaled[name] for name in names] + [scaled[names[0]]] * (3 - len(names)),
            field_shape=field.shape,
            mean=(0.0, 0.0, 0.0),
            std=(1.0, 1.0, 1.0),
        )
        data, data_axes = network_input.image[: len(names)], ["channel", "y", "x"]
        self._check_size(data.shape[1:])
        if "channel" not in self.axes:
            data, data_axes = data[0], ["y", "x"]
        if "batch" in self.axes:
            data, data_axes = data[None], ["batch", *data_axes]
        batch = data.transpose([data_axes.index(axis) for axis in self.axes])
        output = run_package(self.package, self.network, [np.ascontiguousarray(batch)])[0]
        return restore_prediction(self._probabilities(output), network_input=network_input, kind=self.kind)

    def _check_size(self, shape: tuple[int, int]) -> None:
        for axis, size in zip(("y", "x"), shape, strict=True):
            declared = self.sizes[axis]
            fits = size == declared if isinstance(declared, int) else (
                isinstance(declared, ParameterizedSize) and size >= declared.min and (size - declared.min) % declared.step == 0
            )  # fmt: skip
            if not fits:
                raise ModelImportError(
                    f"The {self.kind} package {self.name} cannot take the {shape[0]} x {shape[1]} px input a "
                    f"field becomes at scale {SCALE_FACTOR} padded to a multiple of {PAD_PX} px; its {axis} size "
                    f"is {declared}."
                )

    def _probabilities(self, output: np.ndarray) -> np.ndarray:
        """The package's output map -> (3, H', W') [0, border, foreground] probabilities."""
        tensor = self.package.description.outputs[0]
        axes = list(axis_ids(tensor))
        if "batch" in axes:
            output = np.take(output, 0, axis=axes.index("batch"))
            axes.remove("batch")
        data = output.transpose([axes.index(axis) for axis in ("channel", "y", "x")])
        if not output_is_probability(tensor):
            # Logits, as the HPA networks give them: their softmax over the channels.
            shifted = np.exp(data - data.max(axis=0, keepdims=True))
            data = shifted / shifted.sum(axis=0, keepdims=True)
        probabilities = np.zeros((3, *data.shape[1:]), dtype=np.float32)
        probabilities[1] = data[self.border_channel]
        probabilities[2] = data[self.foreground_channel]
        return probabilities


def _output_channels(package: ModelPackage, *, kind: str) -> tuple[int, int]:
    """(border, foreground) channel indices of the package's first output."""
    tensor = package.description.outputs[0]
    axes = axis_ids(tensor)
    channel = next((axis for axis in tensor.axes if isinstance(axis, ChannelAxis)), None)
    if channel is None or not {"y", "x"} <= set(axes):
        raise ModelImportError(
            f"The {kind} package {package.name} does not output a map with channels (axes {', '.join(axes)}); "
            "a segmentation package outputs foreground and border maps."
        )
    names = [normalise_name(name) for name in channel.channel_names]
    border = [index for index, name in enumerate(names) if name in _BORDER_NAMES]
    foreground = [index for index, name in enumerate(names) if name in _FOREGROUND_NAMES]
    if len(border) == 1 and len(foreground) == 1:
        return border[0], foreground[0]
    if len(names) == 3:
        return 1, 2  # the HPA networks' order: background, border, foreground
    raise ModelImportError(
        f"The {kind} package {package.name} outputs channels {', '.join(map(str, channel.channel_names))}; "
        "name one 'border' and one 'foreground', or output (background, border, foreground)."
    )


class BioimageioBackend:
    """Segments fields with a nucleus and a cell package; load once, reuse for every field."""

    def __init__(self, *, nuclei_model: str | Path | None, cell_model: str | Path | None, device: str = "cpu") -> None:
        if nuclei_model is None or cell_model is None:
            raise ModelImportError(
                "The bioimageio segmentation backend needs a nucleus and a cell package; "
                "pass both (--nuclei-model PKG --cell-model PKG)."
            )
        self.packages: dict[str, SegmentationPackage] = {}
        for kind, path in (("nuclei", nuclei_model), ("cell", cell_model)):
            with open_package(path) as package:
                self.packages[kind] = SegmentationPackage(package, kind=kind, device=device)

    def segment(self, field: FieldImages) -> Segmentation:
        cell_names, used = input_channels(field, kind="cell")
        nuclei_map = self.packages["nuclei"].prediction_map(field, NUCLEI_INPUT_CHANNELS)
        cell_map = self.packages["cell"].prediction_map(field, cell_names)
        nuclei_labels, cell_labels = number_cells_with_nuclei(*label_cell(nuclei_map, cell_map))
        return Segmentation(
            nuclei_labels=nuclei_labels, cell_labels=cell_labels, backend=BACKEND_NAME, channels_used=used
        )

    def segment_batch(self, fields: Sequence[FieldImages]) -> list[Segmentation]:
        return [self.segment(field) for field in fields]
