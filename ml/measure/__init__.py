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
from ml.measure.shape import SHAPE_NAMES, shape_features
from ml.measure.texture import (
    HARALICK_NAMES,
    LBP_BINS,
    haralick_features,
    haralick_names,
    lbp_histogram,
    lbp_names,
    scattering_features,
    scattering_names,
    texture_crops,
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
        return {
            name: (None if np.isnan(value) else float(value))
            for name, value in zip(self.names, self.values[index], strict=True)
        }


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
    channels = {name: getattr(field, name) for name in field.channels_present}
    names = measurement_names(texture=texture, scattering=scattering)
    slices = ndimage.find_objects(cell_labels)
    cell_ids = np.array([index + 1 for index, box in enumerate(slices) if box is not None], dtype=np.int64)
    nucleus_slices = ndimage.find_objects(nuclei_labels, max_label=len(slices))
    rows = []
    for cell_id in cell_ids:
        rows_box, cols_box = slices[cell_id - 1]
        nucleus_box = nucleus_slices[cell_id - 1] if cell_id - 1 < len(nucleus_slices) else None
        if nucleus_box is not None:  # widen the window to hold the whole nucleus, inside or not
            rows_box = slice(min(rows_box.start, nucleus_box[0].start), max(rows_box.stop, nucleus_box[0].stop))
            cols_box = slice(min(cols_box.start, nucleus_box[1].start), max(cols_box.stop, nucleus_box[1].stop))
        cell_mask = cell_labels[rows_box, cols_box] == cell_id
        nucleus_mask = nuclei_labels[rows_box, cols_box] == cell_id
        windows = {name: channel[rows_box, cols_box] for name, channel in channels.items()}
        cell_rows, cell_cols = np.flatnonzero(cell_mask.any(axis=1)), np.flatnonzero(cell_mask.any(axis=0))
        touches = (
            rows_box.start + cell_rows[0] == 0,
            cols_box.start + cell_cols[0] == 0,
            rows_box.start + cell_rows[-1] + 1 == height,
            cols_box.start + cell_cols[-1] + 1 == width,
        )
        row = shape_features(cell_mask, nucleus_mask, touches=touches)
        row += intensity_features(windows, cell_mask, nucleus_mask)
        rows.append(row)
    values = np.array(rows, dtype=np.float64).reshape(len(cell_ids), len(SHAPE_NAMES) + len(intensity_names()))
    if texture or scattering:
        greens, masks = texture_crops(field.green, cell_labels)
        parts = [values]
        if texture:
            parts.append(
                np.array(
                    [
                        np.concatenate([haralick_features(g, m), lbp_histogram(g, m)])
                        for g, m in zip(greens, masks, strict=True)
                    ],
                    dtype=np.float64,
                ).reshape(len(cell_ids), len(HARALICK_NAMES) + LBP_BINS)
            )
        if scattering:
            parts.append(scattering_features(greens))
        values = np.concatenate(parts, axis=1)
    return CellMeasurements(cell_ids=cell_ids, names=names, values=values)
