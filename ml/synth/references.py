"""One cell's maps and its reference channels: blue (nucleus), red (microtubules), yellow (ER).

`cell_maps` cuts the cell's box out of the field and derives, without randomness, what every
channel is painted from (masks, distances to the nucleus outline and the cell border, textures).
`paint_references` draws the cell's structures and paints with them: blue is the nucleus (dark
nucleoli, bright condensed chromosomes in dividing cells), red are microtubules radiating from
the centrosome (the spindle in dividing cells), yellow a reticular ER that thins out towards
the cell border; red and yellow dim along cell borders, which is what lets a segmenter separate
touching cells. The structures are returned too, so that green patterns can share them.
"""

import math
from dataclasses import dataclass

import numpy as np

from ml.synth.drawing import Textures, sample_points, splat, walks
from ml.synth.layout import Cell, normalised_radius, window


@dataclass(frozen=True)
class CellMaps:
    """One cell's box of the field and the maps its channels are painted from; arrays are (H, W) of the box."""

    rows: slice  # the box in the field
    cols: slice
    mask: np.ndarray  # bool: the cell's pixels; what is painted outside them is discarded
    nucleus: np.ndarray  # bool
    cytoplasm: np.ndarray  # bool
    nucleus_rho: np.ndarray  # normalised radius of the nucleus outline: < 1 inside
    nucleus_distance: np.ndarray  # < 0 inside the nucleus, ~ px to its outline outside
    soft_nucleus: np.ndarray  # 1 inside the nucleus, falling to 0 across its outline
    edge_distance: np.ndarray  # px to the nearest cell border
    edge_dimming: np.ndarray  # 0.35 on cell borders, rising to 1 inside
    grain: np.ndarray  # the field's `Textures`, cut to the box
    network: np.ndarray
    ys: np.ndarray  # int (H, 1): row of each pixel in the box
    xs: np.ndarray  # int (1, W): column of each pixel in the box
    nucleus_centre: tuple[float, float]  # (y, x) in the box
    nucleus_radius: float  # px
    cell_radius: float  # px
    scale: float  # the field's size over the reference size

    @property
    def shape(self) -> tuple[int, int]:
        return self.mask.shape


@dataclass(frozen=True)
class Structures:
    """A cell's drawn structures, in box coordinates; the reference channels show them and green patterns share them."""

    centrosome: np.ndarray  # (y, x)
    nucleoli: np.ndarray  # (N, 2) centres (y, x); none in a dividing cell
    nucleolus_sigma: float  # px
    nucleoli_map: np.ndarray | float  # spots peaking at about 1 on the nucleoli; 0.0 without nucleoli
    spindle: np.ndarray | None  # fibres of the mitotic spindle; dividing cells only
    microtubules: np.ndarray  # red's fibres: radiating from the centrosome, or the spindle
    er: np.ndarray  # yellow's reticulum, densest around the nucleus, and the nuclear envelope


@dataclass(frozen=True)
class ReferenceChannels:
    """Blue, red and yellow of one cell's box (float (H, W), to be kept inside `CellMaps.mask`)."""

    blue: np.ndarray
    red: np.ndarray
    yellow: np.ndarray
    structures: Structures


def cell_maps(
    cell: Cell,
    cell_id: int,
    *,
    cell_labels: np.ndarray,
    edge_distance: np.ndarray,
    textures: Textures,
    scale: float,
) -> CellMaps | None:
    """The maps of cell `cell_id` of `cell_labels`; None when none of its pixels are left."""
    size_px = cell_labels.shape[0]
    rows, cols = window(cell.cell_centre, 1.3 * max(cell.cell_axes) + 4, size_px)
    mask = cell_labels[rows, cols] == cell_id
    if not mask.any():
        return None
    ys, xs = np.ogrid[rows, cols]
    nucleus_rho = normalised_radius(
        ys, xs, cell.nucleus_centre, cell.nucleus_axes, cell.nucleus_angle, cell.nucleus_harmonics
    )
    nucleus_radius = cell.nucleus_radius
    nucleus_distance = (nucleus_rho - 1.0) * nucleus_radius
    nucleus = (nucleus_rho < 1.0) & mask
    edge = edge_distance[rows, cols]
    return CellMaps(
        rows=rows,
        cols=cols,
        mask=mask,
        nucleus=nucleus,
        cytoplasm=mask & ~nucleus,
        nucleus_rho=nucleus_rho,
        nucleus_distance=nucleus_distance,
        soft_nucleus=np.clip(-nucleus_distance / (2.5 * scale + 0.5), 0.0, 1.0),
        edge_distance=edge,
        edge_dimming=1.0 - 0.65 * np.exp(-edge / (10.0 * scale + 1.0)),
        grain=textures.grain[rows, cols],
        network=textures.network[rows, cols],
        ys=ys - rows.start,
        xs=xs - cols.start,
        nucleus_centre=(cell.nucleus_centre[0] - rows.start, cell.nucleus_centre[1] - cols.start),
        nucleus_radius=nucleus_radius,
        cell_radius=cell.cell_radius,
        scale=scale,
    )


def paint_references(rng: np.random.Generator, cell: Cell, maps: CellMaps) -> ReferenceChannels:
    """Draw the cell's structures and paint blue, red and yellow with them."""
    shape, scale, rn = maps.shape, maps.scale, maps.nucleus_radius

    # Organelle positions shared by the reference channels and the green patterns.
    centrosome_angle = rng.uniform(0, 2 * np.pi)
    centrosome = np.array(maps.nucleus_centre) + (rn * rng.uniform(1.1, 1.3)) * np.array(
        [np.sin(centrosome_angle), np.cos(centrosome_angle)]
    )
    if cell.mitotic:
        nucleoli = np.zeros((0, 2))
    else:
        nucleoli = sample_points(rng, maps.nucleus_rho < 0.55, int(rng.integers(2, 5)))
    nucleolus_sigma = rng.uniform(7, 11) * scale + 0.5
    nucleoli_map = splat(shape, nucleoli[:, 0], nucleoli[:, 1], nucleolus_sigma, lines=False) if len(nucleoli) else 0.0
    spindle = _spindle(rng, shape, maps.nucleus_centre, cell, scale) if cell.mitotic else None

    # Blue: DAPI with chromatin grain and darker nucleoli; condensed chromosomes are brighter.
    nucleus_brightness = rng.uniform(0.45, 0.8) * (1.6 if cell.mitotic else 1.0)
    blue = (
        maps.soft_nucleus
        * nucleus_brightness
        * (0.75 + 0.35 * maps.grain)
        * (1.0 - 0.45 * np.minimum(nucleoli_map, 1.0))
    )

    # Red: microtubules radiating from the centrosome over a diffuse tubulin pool.
    if cell.mitotic:
        microtubules = spindle
    else:
        count = int(rng.integers(70, 110))
        starts = np.repeat(centrosome[None, :], count, axis=0)
        angles = rng.uniform(0, 2 * np.pi, count)
        ray_y, ray_x = walks(rng, starts, angles, rng.uniform(0.8, 1.4, count) * maps.cell_radius, 0.04)
        microtubules = splat(shape, ray_y, ray_x, 1.2 * scale + 0.4, lines=True)
    red = rng.uniform(0.35, 0.6) * (0.3 + 0.9 * microtubules) * np.where(maps.nucleus, 0.5, 1.0) * maps.edge_dimming

    # Yellow: reticular ER, densest around the nucleus, outlining the nuclear envelope.
    er_density = 0.35 + 0.65 * np.exp(-np.maximum(maps.nucleus_distance, 0) / (0.9 * rn))
    envelope = np.exp(-((maps.nucleus_distance / (4 * scale + 1)) ** 2))
    er = np.where(maps.nucleus, 0.15, (0.25 + 0.75 * maps.network) * er_density) + 0.4 * envelope
    yellow = rng.uniform(0.35, 0.6) * er * maps.edge_dimming

    structures = Structures(
        centrosome=centrosome,
        nucleoli=nucleoli,
        nucleolus_sigma=nucleolus_sigma,
        nucleoli_map=nucleoli_map,
        spindle=spindle,
        microtubules=microtubules,
        er=er,
    )
    return ReferenceChannels(blue=blue, red=red, yellow=yellow, structures=structures)


def _spindle(
    rng: np.random.Generator, shape: tuple[int, int], centre: tuple[float, float], cell: Cell, scale: float
) -> np.ndarray:
    """Fibres from two poles to the chromosome plate: the bipolar mitotic spindle."""
    plate_angle = cell.nucleus_angle
    axis = np.array([math.cos(plate_angle), -math.sin(plate_angle)])  # (y, x), perpendicular to the plate
    along = np.array([math.sin(plate_angle), math.cos(plate_angle)])
    pole_distance = 0.65 * cell.cell_radius
    ys_all, xs_all = [], []
    for sign in (-1.0, 1.0):
        pole = np.array(centre) + sign * pole_distance * axis
        count = 40
        targets = np.array(centre)[None, :] + rng.uniform(-0.8, 0.8, (count, 1)) * cell.nucleus_axes[0] * along
        t = np.linspace(0, 1, int(pole_distance * 1.2))[None, :]
        ys_all.append((pole[0] + (targets[:, :1] - pole[0]) * t).ravel())
        xs_all.append((pole[1] + (targets[:, 1:] - pole[1]) * t).ravel())
    fibres = splat(shape, np.concatenate(ys_all), np.concatenate(xs_all), 1.5 * scale + 0.5, lines=True)
    return np.minimum(fibres / 2.5, 1.3)
