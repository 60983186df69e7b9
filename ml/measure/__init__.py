"""Per-cell measurements, as CellProfiler users expect them: shape, intensity per channel, texture.

`measure_cells` measures every cell of a segmented field and returns one row per cell
(`CellMeasurements`, names in `measurement_names`). Shape and intensity are measured at the field's
full resolution (`ml.measure.shape`, `ml.measure.intensity`); textures of the protein channel on
each cell's crop at a fixed size (`ml.measure.texture`, where every parameter is documented).
Wavelet scattering is the costly part (417 coefficients, batched through kymatio) and is
measured only when asked for.
"""

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ml.io import FieldImages
from ml.measure.intensity import intensity_features, intensity_names
from ml.measure.shape import SHAPE_NAMES, pixel_rows_cols, shape_features
from ml.measure.texture import (
    LBP_BINS,
    TEXTURE_SIZE_PX,
    haralick_many,
    haralick_names,
    lbp_histogram,
    lbp_names,
    scattering_features,
    scattering_names,
    texture_crop,
)


def measurement_names(*, texture: bool = True, scattering: bool = False) -> tuple[str, ...]:
    names = (*SHAPE_NAMES, *intensity_names())
    if texture:
        names += (*haralick_names(), *lbp_names())
    if scattering:
        names += scattering_names()
    return names


@dataclass(frozen=True, eq=False)
class CellMeasurements:
    """One row per cell (ids ascending); NaN where a measurement does not apply (a missing channel)."""

    cell_ids: np.ndarray  # int64 (N,)
    names: tuple[str, ...]
    values: np.ndarray  # float64 (N, len(names))

    def __len__(self) -> int:
        return len(self.cell_ids)

    def column(self, name: str) -> np.ndarray:
        return self.values[:, self.names.index(name)]

    def row_dict(self, index: int) -> dict[str, float | None]:
        """Cell `index`'s measurements by name, NaN as None (JSON has no NaN)."""
        values = self.values[index].tolist()  # Python floats at once: NaN is the one value unequal to itself
        return {name: (value if value == value else None) for name, value in zip(self.names, values, strict=True)}


def measure_cells(
    field: FieldImages,
    cell_labels: np.ndarray,
    nuclei_labels: np.ndarray,
    *,
    texture: bool = True,
    scattering: bool = False,
) -> CellMeasurements:
    """Measure every cell of `cell_labels` (nucleus i of `nuclei_labels` belongs to cell i)."""
    if cell_labels.shape != field.shape or nuclei_labels.shape != field.shape:
        raise ValueError(f"Labels {cell_labels.shape} and {nuclei_labels.shape} do not match the field {field.shape}.")
    height, width = field.shape
    channels = {name: np.ascontiguousarray(getattr(field, name)) for name in field.channels_present}
    flat_channels = {name: channel.ravel() for name, channel in channels.items()}  # views
    names = measurement_names(texture=texture, scattering=scattering)
    levels = (1 << field.bit_depth) - 1  # pixels are k / levels as read (`ml.io`); checked where used
    slices = ndimage.find_objects(cell_labels)
    cell_ids = np.array([index + 1 for index, box in enumerate(slices) if box is not None], dtype=np.int64)
    nucleus_slices = ndimage.find_objects(nuclei_labels, max_label=len(slices))
    rows = []
    greens, masks = [], []
    for cell_id in cell_ids:
        own_rows, own_cols = slices[cell_id - 1]
        rows_box, cols_box = own_rows, own_cols
        nucleus_box = nucleus_slices[cell_id - 1] if cell_id - 1 < len(nucleus_slices) else None
        if nucleus_box is not None:  # widen the window to hold the whole nucleus, inside or not
            rows_box = slice(min(rows_box.start, nucleus_box[0].start), max(rows_box.stop, nucleus_box[0].stop))
            cols_box = slice(min(cols_box.start, nucleus_box[1].start), max(cols_box.stop, nucleus_box[1].stop))
        cell_mask = cell_labels[rows_box, cols_box] == cell_id
        nucleus_mask = nuclei_labels[rows_box, cols_box] == cell_id
        windows = {name: channel[rows_box, cols_box] for name, channel in channels.items()}
        touches = (own_rows.start == 0, own_cols.start == 0, own_rows.stop == height, own_cols.stop == width)
        pixels = np.flatnonzero(cell_mask)
        box_rows, box_cols = pixel_rows_cols(pixels, cell_mask.shape[1])
        row = shape_features(cell_mask, nucleus_mask, touches=touches, pixel_rows=(box_rows, box_cols))
        # The cell's pixels taken from the whole field by index: the values of window[cell_mask].
        indices = (box_rows + rows_box.start) * width + (box_cols + cols_box.start)
        values = {name: flat.take(indices) for name, flat in flat_channels.items()}
        row += intensity_features(windows, cell_mask, nucleus_mask, values=values, pixels=pixels, levels=levels)
        rows.append(row)
        if texture or scattering:  # the cell's own box inside the window
            own = (
                slice(own_rows.start - rows_box.start, own_rows.stop - rows_box.start),
                slice(own_cols.start - cols_box.start, own_cols.stop - cols_box.start),
            )
            green, mask = texture_crop(windows["green"][own], cell_mask[own])
            greens.append(green)
            masks.append(mask)
    values = np.array(rows, dtype=np.float64).reshape(len(cell_ids), len(SHAPE_NAMES) + len(intensity_names()))
    if texture or scattering:
        parts = [values]
        if texture:
            lbp = np.array([lbp_histogram(g, m) for g, m in zip(greens, masks, strict=True)], dtype=np.float64)
            parts.append(np.concatenate([haralick_many(greens, masks), lbp.reshape(len(cell_ids), LBP_BINS)], axis=1))
        if scattering:
            size = TEXTURE_SIZE_PX
            parts.append(scattering_features(np.stack(greens) if greens else np.zeros((0, size, size), np.float32)))
        values = np.concatenate(parts, axis=1)
    return CellMeasurements(cell_ids=cell_ids, names=names, values=values)
