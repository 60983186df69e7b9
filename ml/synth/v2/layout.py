"""Where the cells of a v2 field lie: colonies of irregular, touching cells of varied size.

Differences from the v1 layout (`ml.synth.layout`), all drawn for 2048 px fields:
- a field is sparse, medium or confluent; nuclei are thrown in colonies (a new cell is often
  placed next to an existing one), so neighbours touch along long shared borders;
- cell and nucleus sizes vary log-normally around a per-field cell-line size; cells are often
  elongated (up to 2.6 : 1) with the nucleus off-centre, and their outline has six harmonics
  plus a ragged border from a field-wide noise (lamellipodia, protrusions);
- dividing cells are small and round, in metaphase (one chromosome plate) or anaphase (two).
"""

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ml.synth.layout import normalised_radius, window

DENSITY_REGIMES = {  # spacing factor (centre distance over the sum of cell radii) and colony probability
    "sparse": ((1.0, 1.2), 0.4),
    "medium": ((0.8, 1.0), 0.6),
    "confluent": ((0.62, 0.78), 0.8),
}
DENSITY_PROBABILITIES = {"sparse": 0.3, "medium": 0.4, "confluent": 0.3}


@dataclass(frozen=True)
class Cell:
    """Geometry of one v2 cell in image coordinates (px); `mitotic` is what `ml.synth.classes` reads."""

    nucleus_centre: tuple[float, float]
    nucleus_axes: tuple[float, float]
    nucleus_angle: float
    nucleus_harmonics: np.ndarray  # (K, 2): amplitude and phase of shape harmonics 2..K+1
    cell_centre: tuple[float, float]
    cell_axes: tuple[float, float]
    cell_angle: float
    cell_harmonics: np.ndarray
    mitotic: bool
    anaphase: bool = False  # dividing cells only: two chromosome plates instead of one
    ruffle: float = 0.1  # amplitude of the ragged border

    @property
    def nucleus_radius(self) -> float:
        return math.sqrt(self.nucleus_axes[0] * self.nucleus_axes[1])

    @property
    def cell_radius(self) -> float:
        return math.sqrt(self.cell_axes[0] * self.cell_axes[1])

    @property
    def reach(self) -> float:
        """Furthest distance (px) of the outline from the cell centre."""
        return max(self.cell_axes) * (1.0 + float(self.cell_harmonics[:, 0].sum()) + 2 * self.ruffle) + 2


def _harmonics(rng: np.random.Generator, amplitude: float, count: int) -> np.ndarray:
    """Decaying amplitudes (orders 2..count+1) and random phases."""
    orders = np.arange(2, count + 2)
    amplitudes = rng.uniform(0.3, 1.0, count) * amplitude * (2.0 / orders) ** 0.8
    return np.stack([amplitudes, rng.uniform(0, 2 * np.pi, count)], axis=1)


def place_cells(rng: np.random.Generator, size_px: int, scale: float, *, need_mitotic: bool) -> list[Cell]:
    """Throw nuclei in colonies over the image plus a margin and grow a cell around each."""
    regime = str(rng.choice(list(DENSITY_PROBABILITIES), p=list(DENSITY_PROBABILITIES.values())))
    (spacing_low, spacing_high), colony_probability = DENSITY_REGIMES[regime]
    spacing = rng.uniform(spacing_low, spacing_high)
    line_size = math.exp(rng.normal(0.0, 0.12))  # the cell line's typical size
    cytoplasm_ratio = rng.uniform(1.9, 2.7)  # the cell line's cell-to-nucleus radius
    elongation_mean = rng.uniform(1.2, 2.0)
    mitotic_rate = rng.uniform(0.0, 0.04)
    margin = 150 * scale
    cells: list[Cell] = []
    centres: list[tuple[float, float]] = []
    radii: list[float] = []
    nucleus_radii: list[float] = []
    for _attempt in range(700):
        nucleus_radius = float(np.clip(110 * line_size * math.exp(rng.normal(0, 0.17)), 70, 160)) * scale
        cell_radius = nucleus_radius * cytoplasm_ratio * math.exp(rng.normal(0, 0.15))
        mitotic = rng.random() < mitotic_rate
        if mitotic:
            cell_radius = nucleus_radius * rng.uniform(1.15, 1.45)
        if centres and rng.random() < colony_probability:
            anchor = int(rng.integers(len(centres)))
            direction = rng.uniform(0, 2 * np.pi)
            distance = spacing * (radii[anchor] + cell_radius) * rng.uniform(1.0, 1.15)
            centre = (
                centres[anchor][0] + distance * math.sin(direction),
                centres[anchor][1] + distance * math.cos(direction),
            )
            if not all(-margin < v < size_px + margin for v in centre):
                continue
        else:
            centre = tuple(rng.uniform(-margin, size_px + margin, 2))
        if centres:
            offsets = np.asarray(centres) - np.asarray(centre)
            distance = np.hypot(offsets[:, 0], offsets[:, 1])
            if np.any(distance < spacing * (np.asarray(radii) + cell_radius)):
                continue
            if np.any(distance < 1.45 * (np.asarray(nucleus_radii) + nucleus_radius)):
                continue
        centres.append(centre)
        radii.append(cell_radius)
        nucleus_radii.append(nucleus_radius)
        cells.append(_make_cell(rng, centre, nucleus_radius, cell_radius, mitotic, elongation_mean))
    if need_mitotic:
        # Fields labelled with the spindle have 1-3 dividing cells, away from the border.
        inside = [i for i, c in enumerate(cells) if all(0.15 * size_px < v < 0.85 * size_px for v in c.cell_centre)]
        inside = inside or list(range(len(cells)))
        for i in rng.choice(inside, size=min(len(inside), int(rng.integers(1, 4))), replace=False):
            old = cells[i]
            if not old.mitotic:
                radius = old.nucleus_radius * rng.uniform(1.15, 1.45)
                cells[i] = _make_cell(rng, old.cell_centre, old.nucleus_radius, radius, True, elongation_mean)
    return cells


def _make_cell(
    rng: np.random.Generator,
    centre: tuple[float, float],
    nucleus_radius: float,
    cell_radius: float,
    mitotic: bool,
    elongation_mean: float,
) -> Cell:
    angle = rng.uniform(0, np.pi)
    if mitotic:
        anaphase = rng.random() < 0.35
        plate = (nucleus_radius * rng.uniform(0.7, 0.9), nucleus_radius * rng.uniform(0.2, 0.3))
        return Cell(
            nucleus_centre=centre,
            nucleus_axes=plate,
            nucleus_angle=angle,
            nucleus_harmonics=_harmonics(rng, 0.06, 4),
            cell_centre=centre,
            cell_axes=(cell_radius * rng.uniform(1.0, 1.12), cell_radius / rng.uniform(1.0, 1.12)),
            cell_angle=angle + np.pi / 2,
            cell_harmonics=_harmonics(rng, 0.03, 3),
            mitotic=True,
            anaphase=anaphase,
            ruffle=0.02,
        )
    elongation = float(np.clip(elongation_mean * math.exp(rng.normal(0, 0.25)), 1.0, 2.6))
    nucleus_elongation = float(np.clip(1.0 + (elongation - 1.0) * rng.uniform(0.2, 0.6) + rng.normal(0, 0.1), 1, 1.7))
    long_axis = np.array([math.sin(angle), math.cos(angle)])
    cell_axes = (cell_radius * math.sqrt(elongation), cell_radius / math.sqrt(elongation))
    # The nucleus sits off-centre along the long axis, never closer to the border than its own size.
    room = max(0.0, cell_axes[0] - 1.4 * nucleus_radius * math.sqrt(nucleus_elongation))
    offset = rng.uniform(-0.6, 0.6) * room * long_axis
    return Cell(
        nucleus_centre=(centre[0] + offset[0], centre[1] + offset[1]),
        nucleus_axes=(nucleus_radius * math.sqrt(nucleus_elongation), nucleus_radius / math.sqrt(nucleus_elongation)),
        nucleus_angle=angle + rng.normal(0, 0.2),
        nucleus_harmonics=_harmonics(rng, rng.uniform(0.02, 0.09), 4),
        cell_centre=centre,
        cell_axes=cell_axes,
        cell_angle=angle,
        cell_harmonics=_harmonics(rng, rng.uniform(0.1, 0.3), 6),
        mitotic=False,
        ruffle=rng.uniform(0.03, 0.09),
    )


def ruffle_field(rng: np.random.Generator, size_px: int, scale: float) -> np.ndarray:
    """Smooth zero-mean noise (float32 (H, W), std ~1) that makes cell borders ragged."""
    quarter = max(8, size_px // 4)
    noise = rng.standard_normal((quarter, quarter), dtype=np.float32)
    noise = ndi.gaussian_filter(noise, 6.0 * scale + 1.0) + 0.12 * ndi.gaussian_filter(noise, 1.5)
    noise /= noise.std() + 1e-6
    zoomed = ndi.zoom(noise, size_px / quarter, order=1, grid_mode=True, mode="nearest")
    return zoomed[:size_px, :size_px]


def rasterise(
    cells: list[Cell], size_px: int, scale: float, ruffles: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Cell and nucleus label images (uint16 (H, W)) and the indices of the cells kept.

    Each pixel goes to the cell whose ruffled normalised radius is smallest there (< 1); a nucleus
    always belongs to its cell. Cells without a visible nucleus or too small are dropped; kept
    cell k (in `cells` order) has id k + 1.
    """
    best = np.full((size_px, size_px), np.inf, dtype=np.float32)
    owner = np.zeros((size_px, size_px), dtype=np.int32)
    nucleus_owner = np.zeros((size_px, size_px), dtype=np.int32)
    nucleus_fraction = []
    for index, cell in enumerate(cells, start=1):
        rows, cols = window(cell.cell_centre, cell.reach, size_px)
        ys, xs = np.ogrid[rows, cols]
        rho = normalised_radius(ys, xs, cell.cell_centre, cell.cell_axes, cell.cell_angle, cell.cell_harmonics)
        rho = rho * (1.0 + cell.ruffle * ruffles[rows, cols])
        region_best = best[rows, cols]
        wins = (rho < 1.0) & (rho < region_best)
        region_best[wins] = rho[wins]
        owner[rows, cols][wins] = index

        reach = max(cell.nucleus_axes) * (1.0 + float(cell.nucleus_harmonics[:, 0].sum())) + 2
        rows, cols = window(cell.nucleus_centre, reach, size_px)
        ys, xs = np.ogrid[rows, cols]
        rho_n = nucleus_rho(cell, ys, xs)
        inside = rho_n < 1.0
        nucleus_owner[rows, cols][inside] = index
        owner[rows, cols][inside] = index
        full_area = nucleus_area(cell)
        nucleus_fraction.append(inside.sum() / max(full_area, 1.0))

    min_cell_area = 5500 * scale**2
    cell_labels = np.zeros((size_px, size_px), dtype=np.uint16)
    nuclei_labels = np.zeros((size_px, size_px), dtype=np.uint16)
    kept: list[int] = []
    objects = ndi.find_objects(owner)
    for index in range(1, len(cells) + 1):
        box = objects[index - 1] if index - 1 < len(objects) else None
        if box is None or nucleus_fraction[index - 1] < 0.4:
            continue
        pieces, _count = ndi.label(owner[box] == index)
        nucleus_here = nucleus_owner[box] == index
        piece_ids = np.unique(pieces[nucleus_here & (pieces > 0)])
        mask = np.isin(pieces, piece_ids) & (pieces > 0)
        if mask.sum() < min_cell_area:
            continue
        kept.append(index - 1)
        cell_labels[box][mask] = len(kept)
        nuclei_labels[box][nucleus_here & mask] = len(kept)
    return cell_labels, nuclei_labels, kept


def nucleus_rho(cell: Cell, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Normalised radius of the nucleus (< 1 inside); an anaphase cell has two plates along its spindle axis."""
    if not cell.anaphase:
        return normalised_radius(
            ys, xs, cell.nucleus_centre, cell.nucleus_axes, cell.nucleus_angle, cell.nucleus_harmonics
        )
    shift = 0.55 * cell.cell_radius * np.array([math.cos(cell.nucleus_angle), -math.sin(cell.nucleus_angle)])
    axes = (cell.nucleus_axes[0] * 0.85, cell.nucleus_axes[1] * 0.9)
    result = None
    for sign in (-1.0, 1.0):
        centre = (cell.nucleus_centre[0] + sign * shift[0], cell.nucleus_centre[1] + sign * shift[1])
        rho = normalised_radius(ys, xs, centre, axes, cell.nucleus_angle, cell.nucleus_harmonics)
        result = rho if result is None else np.minimum(result, rho)
    return result


def nucleus_area(cell: Cell) -> float:
    area = math.pi * cell.nucleus_axes[0] * cell.nucleus_axes[1]
    return area * (2 * 0.85 * 0.9 if cell.anaphase else 1.0)
