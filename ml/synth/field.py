"""One synthetic field drawn from a random generator: layout, classes, channels, optics.

Sizes are drawn for 2048 px fields (cells 250-400 px across, as in HPA) and scale with `size_px`.
Per-image (staining strength) and per-cell intensity changes are drawn here and in
`ml.synth.painters`; the order of the random draws fixes every pixel, so it must not change.
"""

from dataclasses import dataclass

import numpy as np

from ml.constants import CHANNELS
from ml.synth.classes import MITOTIC_SPINDLE_CLASS, assign_classes, sample_image_labels
from ml.synth.drawing import Textures
from ml.synth.layout import Cell, edge_distance, place_cells, rasterise
from ml.synth.optics import apply_optics
from ml.synth.painters import paint_green
from ml.synth.references import cell_maps, paint_references

REFERENCE_SIZE_PX = 2048
MIN_SIZE_PX = 128  # a smaller field cannot hold a whole cell


@dataclass(frozen=True)
class SyntheticField:
    """One synthetic field and its truth; cell id i (1..N) has the classes `cell_classes[i - 1]`."""

    image: np.ndarray  # float32 (4, H, W) in CHANNELS order, values in [0, 1]
    cell_labels: np.ndarray  # uint16 (H, W), 0 = background
    nuclei_labels: np.ndarray  # uint16 (H, W), nucleus i lies inside cell i
    cell_classes: tuple[tuple[int, ...], ...]
    image_labels: tuple[int, ...]  # the weak label of the field, as train.csv gives it

    @property
    def cell_count(self) -> int:
        return len(self.cell_classes)


def synthesize_field(
    rng: np.random.Generator,
    size_px: int = REFERENCE_SIZE_PX,
    *,
    image_labels: tuple[int, ...] | None = None,
) -> SyntheticField:
    """Draw one square field; `image_labels` fixes the field's classes instead of sampling them."""
    if size_px < MIN_SIZE_PX:
        raise ValueError(f"size_px={size_px} is too small for whole cells; use {MIN_SIZE_PX} px or more.")
    scale = size_px / REFERENCE_SIZE_PX
    labels = tuple(sorted(image_labels)) if image_labels is not None else sample_image_labels(rng)
    cells = place_cells(rng, size_px, scale, need_mitotic=MITOTIC_SPINDLE_CLASS in labels)
    cell_labels, nuclei_labels, kept = rasterise(cells, size_px, scale)
    cells = [cells[i] for i in kept]
    cell_classes = assign_classes(rng, cells, labels)

    edges = edge_distance(cell_labels)
    textures = Textures(rng, size_px, scale)
    image = np.zeros((len(CHANNELS), size_px, size_px), dtype=np.float32)
    green_gain = rng.uniform(0.35, 1.0)
    for index, (cell, classes) in enumerate(zip(cells, cell_classes, strict=True)):
        _paint_cell(
            rng,
            image,
            cell=cell,
            cell_id=index + 1,
            classes=classes,
            cell_labels=cell_labels,
            edge_distance=edges,
            textures=textures,
            scale=scale,
            green_gain=green_gain,
        )
    apply_optics(rng, image, scale)
    return SyntheticField(
        image=image,
        cell_labels=cell_labels,
        nuclei_labels=nuclei_labels,
        cell_classes=tuple(cell_classes),
        image_labels=tuple(sorted({c for classes in cell_classes for c in classes} & set(labels)) or labels),
    )


def _paint_cell(
    rng: np.random.Generator,
    image: np.ndarray,
    *,
    cell: Cell,
    cell_id: int,
    classes: tuple[int, ...],
    cell_labels: np.ndarray,
    edge_distance: np.ndarray,
    textures: Textures,
    scale: float,
    green_gain: float,
) -> None:
    """Paint all four channels of one cell into `image`, inside the cell's pixels only."""
    maps = cell_maps(
        cell, cell_id, cell_labels=cell_labels, edge_distance=edge_distance, textures=textures, scale=scale
    )
    if maps is None:
        return
    references = paint_references(rng, cell, maps)
    green = paint_green(rng, classes, maps, references.structures, green_gain=green_gain)
    channels = {"red": references.red, "green": green, "blue": references.blue, "yellow": references.yellow}
    for channel, values in channels.items():
        target = image[CHANNELS.index(channel), maps.rows, maps.cols]
        target[maps.mask] = np.broadcast_to(values, maps.shape)[maps.mask]
