"""One v2 field: colonies of irregular touching cells, real-like textures, staining and optics.

The steps are v1's (layout, classes, references, green, optics) with v2's modules, plus:
- every cell's channels fade into its thin border (`thickness`), and cells are added to the
  field (a defocused cell's blur spills over its neighbours);
- a few cells per field are out of focus: blurred and dimmer;
- reference channels have their own per-field gain well below saturation, green a staining
  strength from dim to bright.
The truth (cell and nucleus labels, classes per cell) has the same form as v1's `SyntheticField`.
"""

import numpy as np
from scipy import ndimage as ndi

from ml.constants import CHANNELS
from ml.synth.classes import MITOTIC_SPINDLE_CLASS, assign_classes, sample_image_labels
from ml.synth.field import MIN_SIZE_PX, REFERENCE_SIZE_PX, SyntheticField
from ml.synth.layout import edge_distance
from ml.synth.v2.layout import Cell, place_cells, rasterise, ruffle_field
from ml.synth.v2.optics import apply_optics
from ml.synth.v2.painters import paint_green
from ml.synth.v2.references import Textures, cell_maps, paint_references


def synthesize_field_v2(
    rng: np.random.Generator,
    size_px: int = REFERENCE_SIZE_PX,
    *,
    image_labels: tuple[int, ...] | None = None,
) -> SyntheticField:
    """Draw one square v2 field; `image_labels` fixes the field's classes instead of sampling them."""
    if size_px < MIN_SIZE_PX:
        raise ValueError(f"size_px={size_px} is too small for whole cells; use {MIN_SIZE_PX} px or more.")
    scale = size_px / REFERENCE_SIZE_PX
    labels = tuple(sorted(image_labels)) if image_labels is not None else sample_image_labels(rng)
    cells = place_cells(rng, size_px, scale, need_mitotic=MITOTIC_SPINDLE_CLASS in labels)
    cell_labels, nuclei_labels, kept = rasterise(cells, size_px, scale, ruffle_field(rng, size_px, scale))
    cells = [cells[i] for i in kept]
    cell_classes = assign_classes(rng, cells, labels)

    edges = edge_distance(cell_labels)
    textures = Textures(rng, size_px, scale)
    image = np.zeros((len(CHANNELS), size_px, size_px), dtype=np.float32)
    green_gain = float(np.exp(rng.uniform(np.log(0.25), np.log(1.1))))
    defocus_rate = rng.uniform(0.0, 0.12)
    boxes = ndi.find_objects(cell_labels)
    for index, (cell, classes) in enumerate(zip(cells, cell_classes, strict=True)):
        box = boxes[index] if index < len(boxes) else None
        if box is None:
            continue
        _paint_cell(
            rng,
            image,
            cell=cell,
            cell_id=index + 1,
            box=_grow(box, int(12 * scale) + 4, size_px),
            classes=classes,
            cell_labels=cell_labels,
            edge_distance=edges,
            textures=textures,
            scale=scale,
            green_gain=green_gain,
            defocus=rng.random() < defocus_rate,
        )
    # Reference channels mostly below saturation; green's strength is in its painter.
    low = np.array([{"red": 0.5, "green": 1.0, "blue": 0.45, "yellow": 0.5}[name] for name in CHANNELS])
    high = np.array([{"red": 1.3, "green": 1.0, "blue": 1.0, "yellow": 1.3}[name] for name in CHANNELS])
    gains = np.exp(rng.uniform(np.log(low), np.log(high))).astype(np.float32)
    apply_optics(rng, image, scale, gains)
    return SyntheticField(
        image=image,
        cell_labels=cell_labels,
        nuclei_labels=nuclei_labels,
        cell_classes=tuple(cell_classes),
        image_labels=tuple(sorted({c for classes in cell_classes for c in classes} & set(labels)) or labels),
    )


def _grow(box: tuple[slice, slice], margin: int, size_px: int) -> tuple[slice, slice]:
    return tuple(slice(max(0, s.start - margin), min(size_px, s.stop + margin)) for s in box)


def _paint_cell(
    rng: np.random.Generator,
    image: np.ndarray,
    *,
    cell: Cell,
    cell_id: int,
    box: tuple[slice, slice],
    classes: tuple[int, ...],
    cell_labels: np.ndarray,
    edge_distance: np.ndarray,
    textures: Textures,
    scale: float,
    green_gain: float,
    defocus: bool,
) -> None:
    """Add all four channels of one cell to `image`."""
    maps = cell_maps(
        cell, cell_id, box, cell_labels=cell_labels, edge_distance=edge_distance, textures=textures, scale=scale
    )
    if maps is None:
        return
    references = paint_references(rng, cell, maps)
    green = paint_green(rng, classes, maps, references.structures, green_gain=green_gain)
    mask = maps.base.mask
    sigma = rng.uniform(2.0, 5.0) * scale + 1.0 if defocus else 0.0
    dim = rng.uniform(0.55, 0.85) if defocus else 1.0
    channels = {"red": references.red, "green": green, "blue": references.blue, "yellow": references.yellow}
    for channel, values in channels.items():
        values = np.broadcast_to(values, mask.shape) * np.where(mask, 1.0, 0.0)
        if defocus:
            values = ndi.gaussian_filter(values.astype(np.float32), sigma) * dim
        image[CHANNELS.index(channel), maps.base.rows, maps.base.cols] += values
