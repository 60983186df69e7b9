"""One v2 cell's maps and its reference channels: blue (nucleus), red (microtubules), yellow (ER).

The maps are the v1 `CellMaps` (so the v1 painters' helpers apply) with v2's own textures and a
`thickness` map: cytoplasm is thick around the nucleus and thins out into dim lamellae towards
the border, which is what makes real cells fade at their edges instead of ending in a step.
- blue: DAPI with multi-scale chromatin texture, darker nucleoli, a slightly brighter rim;
  condensed, clumpy chromosomes in dividing cells; never near saturation;
- red: a mesh of fine, curved microtubule filaments, most leaving the centrosome, some lying
  anywhere in the cytoplasm, over a diffuse tubulin pool; the spindle in dividing cells;
- yellow: a reticular ER from a two-scale network, densest around the nucleus, with the nuclear
  envelope, thinning towards the border.
"""

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ml.synth.drawing import sample_points, splat, walks
from ml.synth.references import CellMaps, Structures
from ml.synth.v2.layout import Cell, nucleus_rho


class Textures:
    """Random fields shared by the cells of a v2 field, float32 (H, W), drawn at half resolution."""

    def __init__(self, rng: np.random.Generator, size_px: int, scale: float) -> None:
        half = (size_px + 1) // 2
        white = rng.standard_normal((half, half), dtype=np.float32)
        fine = ndi.gaussian_filter(white, 1.0 * scale + 0.5)
        mid = ndi.gaussian_filter(white, 2.2 * scale + 0.5)
        coarse = ndi.gaussian_filter(mid, 5.0 * scale + 0.5)
        band_fine = _unit(fine - mid)
        band_mid = _unit(mid - coarse)
        # Zero crossings of band-pass noise form meshes; two scales give tubules and cisternae.
        mesh = 0.6 * np.exp(-((band_fine / 0.5) ** 2)) + 0.6 * np.exp(-((band_mid / 0.35) ** 2))
        self.network = _upsample2(np.clip(mesh, 0.0, 1.0), size_px)
        self.grain = _upsample2(np.clip(0.5 + 0.22 * _unit(fine) + 0.12 * _unit(coarse), 0.0, 1.0), size_px)
        chromatin = 0.6 * _unit(fine - coarse) + 0.4 * _unit(coarse)
        self.chromatin = _upsample2(np.clip(0.5 + 0.2 * chromatin, 0.0, 1.0), size_px)
        speckle = ndi.gaussian_filter(rng.standard_normal((half, half), dtype=np.float32), 0.8)
        self.speckle = _upsample2(np.clip(0.5 + 0.25 * _unit(speckle), 0.0, 1.0), size_px)


def _unit(image: np.ndarray) -> np.ndarray:
    return (image - image.mean()) / (image.std() + 1e-6)


def _upsample2(image: np.ndarray, size_px: int) -> np.ndarray:
    return ndi.zoom(image, 2, order=1, grid_mode=True, mode="nearest")[:size_px, :size_px].astype(np.float32)


@dataclass(frozen=True)
class CellMapsV2:
    """The v1 maps of a cell plus what only v2 paints with."""

    base: CellMaps
    thickness: np.ndarray  # ~1 around the nucleus, falling to ~0.2 at the border
    chromatin: np.ndarray
    speckle: np.ndarray
    cell_angle: float
    cell_axes: tuple[float, float]
    cell_centre: tuple[float, float]  # (y, x) in the box


@dataclass(frozen=True)
class ReferenceChannelsV2:
    blue: np.ndarray
    red: np.ndarray
    yellow: np.ndarray
    structures: Structures


def cell_maps(
    cell: Cell,
    cell_id: int,
    box: tuple[slice, slice],
    *,
    cell_labels: np.ndarray,
    edge_distance: np.ndarray,
    textures: Textures,
    scale: float,
) -> CellMapsV2 | None:
    """The maps of cell `cell_id` in `box` (its bounding box plus a margin); None when it has no pixels."""
    rows, cols = box
    mask = cell_labels[rows, cols] == cell_id
    if not mask.any():
        return None
    ys, xs = np.ogrid[rows, cols]
    rho = nucleus_rho(cell, ys, xs)
    rn = cell.nucleus_radius
    nucleus_distance = (rho - 1.0) * rn
    nucleus = (rho < 1.0) & mask
    edge = edge_distance[rows, cols]
    base = CellMaps(
        rows=rows,
        cols=cols,
        mask=mask,
        nucleus=nucleus,
        cytoplasm=mask & ~nucleus,
        nucleus_rho=rho,
        nucleus_distance=nucleus_distance,
        soft_nucleus=np.clip(-nucleus_distance / (3.0 * scale + 0.8), 0.0, 1.0),
        edge_distance=edge,
        edge_dimming=1.0 - 0.5 * np.exp(-edge / (14.0 * scale + 1.0)),
        grain=textures.grain[rows, cols],
        network=textures.network[rows, cols],
        ys=ys - rows.start,
        xs=xs - cols.start,
        nucleus_centre=(cell.nucleus_centre[0] - rows.start, cell.nucleus_centre[1] - cols.start),
        nucleus_radius=rn,
        cell_radius=cell.cell_radius,
        scale=scale,
    )
    perinuclear = np.exp(-np.maximum(nucleus_distance, 0.0) / (0.9 * rn))
    border = 1.0 - np.exp(-edge / (25.0 * scale + 1.0))
    thickness = (0.25 + 0.75 * perinuclear) * (0.1 + 0.9 * border)
    return CellMapsV2(
        base=base,
        thickness=thickness.astype(np.float32),
        chromatin=textures.chromatin[rows, cols],
        speckle=textures.speckle[rows, cols],
        cell_angle=cell.cell_angle,
        cell_axes=cell.cell_axes,
        cell_centre=(cell.cell_centre[0] - rows.start, cell.cell_centre[1] - cols.start),
    )


def paint_references(rng: np.random.Generator, cell: Cell, maps: CellMapsV2) -> ReferenceChannelsV2:
    """Draw the cell's structures and paint blue, red and yellow with them (peaks around 1)."""
    base = maps.base
    shape, scale, rn = base.shape, base.scale, base.nucleus_radius

    centrosome_angle = rng.uniform(0, 2 * np.pi)
    centrosome = np.array(base.nucleus_centre) + (rn * rng.uniform(1.05, 1.3)) * np.array(
        [np.sin(centrosome_angle), np.cos(centrosome_angle)]
    )
    if cell.mitotic:
        nucleoli = np.zeros((0, 2))
    else:
        nucleoli = sample_points(rng, base.nucleus_rho < 0.6, int(rng.integers(1, 6)))
    nucleolus_sigma = rng.uniform(6, 12) * scale + 0.5
    nucleoli_map: np.ndarray | float = 0.0
    if len(nucleoli):
        sizes = rng.uniform(0.6, 1.3, len(nucleoli))
        nucleoli_map = sum(
            splat(shape, point[:1], point[1:], nucleolus_sigma * size, lines=False)
            for point, size in zip(nucleoli, sizes, strict=True)
        )
        nucleoli_map = np.minimum(nucleoli_map * (0.7 + 0.6 * base.grain), 1.2)
    spindle = _spindle(rng, shape, base.nucleus_centre, cell, scale) if cell.mitotic else None

    # Blue: chromatin texture, dark nucleoli, a faintly brighter periphery; condensed chromosomes are clumpy.
    rim = np.exp(-(((base.nucleus_distance + 4 * scale) / (6 * scale + 1)) ** 2))
    if cell.mitotic:
        blue = base.soft_nucleus * (0.7 + 0.6 * maps.speckle) * 1.5
    else:
        blue = base.soft_nucleus * (0.55 + 0.7 * maps.chromatin) * (1.0 - 0.55 * np.minimum(nucleoli_map, 1.0))
        blue = blue + 0.15 * rim * base.soft_nucleus
    blue = blue * (0.8 + 0.4 * maps.speckle) * rng.uniform(0.6, 1.0)

    # Red: fine filaments, most from the centrosome, some anywhere, over a diffuse pool.
    if cell.mitotic:
        microtubules = np.maximum(spindle, 0.25 * base.cytoplasm)
    else:
        count = int(rng.integers(40, 90))
        starts = np.repeat(centrosome[None, :], count, axis=0) + rng.normal(0, 12 * scale + 1, (count, 2))
        angles = rng.uniform(0, 2 * np.pi, count)
        lengths = rng.uniform(0.6, 1.5, count) * base.cell_radius
        ys, xs = walks(rng, starts, angles, lengths, rng.uniform(0.03, 0.06))
        loose = int(rng.integers(120, 260))
        loose_starts = sample_points(rng, base.cytoplasm, loose)
        loose_lengths = rng.uniform(0.25, 0.8, loose) * base.cell_radius
        ly, lx = walks(rng, loose_starts, rng.uniform(0, 2 * np.pi, loose), loose_lengths, 0.05)
        ys, xs = np.concatenate([ys, ly]), np.concatenate([xs, lx])
        microtubules = 0.6 * splat(shape, ys, xs, 0.5 * scale + 0.35, lines=True)
    over_nucleus = rng.uniform(0.2, 0.6)
    red = (0.3 * maps.thickness + 0.8 * np.minimum(microtubules, 1.2) * (0.3 + 0.7 * maps.thickness)) * np.where(
        base.nucleus, over_nucleus, 1.0
    )
    red = red * rng.uniform(0.6, 1.0)

    # Yellow: the ER network, densest around the nucleus, the nuclear envelope, little inside the nucleus.
    envelope = np.exp(-((base.nucleus_distance / (4 * scale + 1)) ** 2))
    er = np.where(base.nucleus, 0.02, (0.35 + 0.65 * base.network) * maps.thickness**1.3) + 0.15 * envelope
    yellow = er * rng.uniform(0.6, 1.0)

    structures = Structures(
        centrosome=centrosome,
        nucleoli=nucleoli,
        nucleolus_sigma=nucleolus_sigma,
        nucleoli_map=nucleoli_map,
        spindle=spindle,
        microtubules=microtubules,
        er=er,
    )
    return ReferenceChannelsV2(blue=blue, red=red, yellow=yellow, structures=structures)


def _spindle(
    rng: np.random.Generator, shape: tuple[int, int], centre: tuple[float, float], cell: Cell, scale: float
) -> np.ndarray:
    """A bipolar spindle: fibres from two bright poles to the chromosomes, with astral rays outwards."""
    plate_angle = cell.nucleus_angle
    axis = np.array([math.cos(plate_angle), -math.sin(plate_angle)])  # (y, x), the spindle axis
    along = np.array([math.sin(plate_angle), math.cos(plate_angle)])  # along the plate
    pole_distance = rng.uniform(0.55, 0.75) * cell.cell_radius * (1.25 if cell.anaphase else 1.0)
    ys_all, xs_all = [], []
    for sign in (-1.0, 1.0):
        pole = np.array(centre) + sign * pole_distance * axis
        count = int(rng.integers(35, 60))
        targets = np.array(centre)[None, :] + rng.uniform(-0.9, 0.9, (count, 1)) * cell.nucleus_axes[0] * along
        targets = targets + rng.normal(0, 2 * scale + 0.5, (count, 2))
        bow = rng.normal(0, 0.08, (count, 1)) * pole_distance
        t = np.linspace(0, 1, max(2, int(pole_distance * 1.2)))[None, :]
        bend = (4 * t * (1 - t)) * bow
        ys_all.append((pole[0] + (targets[:, :1] - pole[0]) * t + bend * along[0]).ravel())
        xs_all.append((pole[1] + (targets[:, 1:] - pole[1]) * t + bend * along[1]).ravel())
        astral = int(rng.integers(8, 20))
        ray_y, ray_x = walks(
            rng,
            np.repeat(pole[None, :], astral, axis=0),
            rng.uniform(0, 2 * np.pi, astral),
            rng.uniform(0.2, 0.5, astral) * cell.cell_radius,
            0.03,
        )
        ys_all.append(ray_y * 1.0)
        xs_all.append(ray_x * 1.0)
    fibres = splat(shape, np.concatenate(ys_all), np.concatenate(xs_all), 1.2 * scale + 0.5, lines=True)
    poles = np.array([np.array(centre) + s * pole_distance * axis for s in (-1.0, 1.0)])
    pole_spots = splat(shape, poles[:, 0], poles[:, 1], 5 * scale + 1, lines=False)
    return np.minimum(fibres / 2.5 + 0.8 * pole_spots, 1.3)
