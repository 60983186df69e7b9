"""Helpers of the `ml.synth` tests: small fields, and one cell laid out by hand with its maps and structures."""

from typing import NamedTuple

import numpy as np

from ml.synth import REFERENCE_SIZE_PX, SyntheticField, synthesize_field
from ml.synth.drawing import Textures
from ml.synth.layout import Cell, edge_distance, rasterise
from ml.synth.references import CellMaps, ReferenceChannels, cell_maps, paint_references

SIZE_PX = 384
CELL_FIELD_SIZE_PX = 768


def field(seed: int, **kwargs) -> SyntheticField:
    return synthesize_field(np.random.default_rng(seed), SIZE_PX, **kwargs)


def centred_cell(*, mitotic: bool = False, size_px: int = CELL_FIELD_SIZE_PX) -> Cell:
    """A smooth elliptic cell in the middle of a field; a dividing one has a thin chromosome plate."""
    scale = size_px / REFERENCE_SIZE_PX
    centre = (size_px / 2, size_px / 2)
    nucleus_axes = (56 * scale, 20 * scale) if mitotic else (80 * scale, 64 * scale)
    return Cell(
        nucleus_centre=centre,
        nucleus_axes=nucleus_axes,
        nucleus_angle=0.4,
        nucleus_harmonics=np.zeros((3, 2)),
        cell_centre=centre,
        cell_axes=(180 * scale, 150 * scale),
        cell_angle=0.4,
        cell_harmonics=np.zeros((3, 2)),
        mitotic=mitotic,
    )


class PaintedCell(NamedTuple):
    cell: Cell
    maps: CellMaps
    references: ReferenceChannels


def painted_cell(*, mitotic: bool = False, seed: int = 0, size_px: int = CELL_FIELD_SIZE_PX) -> PaintedCell:
    """`centred_cell` alone in its field: its maps and reference channels."""
    rng = np.random.default_rng(seed)
    scale = size_px / REFERENCE_SIZE_PX
    cell = centred_cell(mitotic=mitotic, size_px=size_px)
    cell_labels, _nuclei_labels, kept = rasterise([cell], size_px, scale)
    assert kept == [0]
    maps = cell_maps(
        cell,
        1,
        cell_labels=cell_labels,
        edge_distance=edge_distance(cell_labels),
        textures=Textures(rng, size_px, scale),
        scale=scale,
    )
    return PaintedCell(cell, maps, paint_references(rng, cell, maps))
