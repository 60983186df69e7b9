"""Where the cells of a synthetic field lie: nuclei placed, cells grown, both rasterised.

Nuclei are thrown onto an area a little larger than the image (so some cells are cut by the
border) and each cell grows from its nucleus as an irregular ellipse; overlapping cells split by
a weighted Voronoi rule (each pixel goes to the cell whose normalised radius is smallest there),
so they touch along curved borders. `edge_distance` gives the distance to the nearest cell
border, along which the painted channels dim.
"""

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi


@dataclass(frozen=True)
class Cell:
    """Geometry of one cell in image coordinates (pixels)."""

    nucleus_centre: tuple[float, float]
    nucleus_axes: tuple[float, float]
    nucleus_angle: float
    nucleus_harmonics: np.ndarray  # (3, 2): amplitude and phase of shape harmonics 2..4
    cell_centre: tuple[float, float]
    cell_axes: tuple[float, float]
    cell_angle: float
    cell_harmonics: np.ndarray
    mitotic: bool

    @property
    def nucleus_radius(self) -> float:
        return math.sqrt(self.nucleus_axes[0] * self.nucleus_axes[1])

    @property
    def cell_radius(self) -> float:
        return math.sqrt(self.cell_axes[0] * self.cell_axes[1])


def random_harmonics(rng: np.random.Generator, max_amplitude: float) -> np.ndarray:
    """Amplitudes and phases (3, 2) of the shape harmonics 2..4 that make an ellipse irregular."""
    return np.stack([rng.uniform(0, max_amplitude, 3), rng.uniform(0, 2 * np.pi, 3)], axis=1)


def place_cells(rng: np.random.Generator, size_px: int, scale: float, *, need_mitotic: bool) -> list[Cell]:
    """Dart-throw nuclei over the image plus a margin; cell radii overlap so neighbours touch."""
    margin = 80 * scale
    spacing = rng.uniform(0.6, 0.9)  # < 1: confluent fields; near 1: gaps between cells
    mitotic_rate = 0.025
    centres: list[tuple[float, float]] = []
    radii: list[float] = []
    cells: list[Cell] = []
    for _attempt in range(600):
        nucleus_radius = rng.uniform(58, 88) * scale
        mitotic = rng.random() < mitotic_rate
        cell_radius = nucleus_radius * rng.uniform(1.9, 2.5) * (0.75 if mitotic else 1.0)
        centre = tuple(rng.uniform(-margin, size_px + margin, 2))
        if centres:
            distance = np.hypot(*(np.asarray(centres) - np.asarray(centre)).T)
            if np.any(distance < spacing * (np.asarray(radii) + cell_radius)):
                continue
        centres.append(centre)
        radii.append(cell_radius)
        cells.append(_make_cell(rng, centre, nucleus_radius, cell_radius, mitotic))
    if need_mitotic:
        # Fields labelled with the spindle have 1-3 dividing cells, placed away from the border.
        inside = [i for i, c in enumerate(cells) if all(0.15 * size_px < v < 0.85 * size_px for v in c.cell_centre)]
        inside = inside or list(range(len(cells)))
        for i in rng.choice(inside, size=min(len(inside), int(rng.integers(1, 4))), replace=False):
            old = cells[i]
            cells[i] = _make_cell(rng, old.cell_centre, old.nucleus_radius, old.cell_radius * 0.75, True)
    return cells


def _make_cell(
    rng: np.random.Generator, centre: tuple[float, float], nucleus_radius: float, cell_radius: float, mitotic: bool
) -> Cell:
    angle = rng.uniform(0, np.pi)
    if mitotic:
        # Condensed chromosomes: a bright thin plate in a round cell.
        nucleus_axes = (nucleus_radius * 0.8, nucleus_radius * 0.28)
        cell_axes = (cell_radius, cell_radius * rng.uniform(0.85, 1.0))
        return Cell(
            nucleus_centre=centre,
            nucleus_axes=nucleus_axes,
            nucleus_angle=angle,
            nucleus_harmonics=random_harmonics(rng, 0.03),
            cell_centre=centre,
            cell_axes=cell_axes,
            cell_angle=angle,
            cell_harmonics=random_harmonics(rng, 0.03),
            mitotic=True,
        )
    elongation = rng.uniform(1.0, 1.35)
    offset = rng.uniform(0, 0.25 * cell_radius) * np.array([np.sin(angle), np.cos(angle)])
    return Cell(
        nucleus_centre=(centre[0] + offset[0], centre[1] + offset[1]),
        nucleus_axes=(nucleus_radius * math.sqrt(elongation), nucleus_radius / math.sqrt(elongation)),
        nucleus_angle=angle + rng.normal(0, 0.3),
        nucleus_harmonics=random_harmonics(rng, 0.05),
        cell_centre=centre,
        cell_axes=(cell_radius * math.sqrt(elongation * 1.1), cell_radius / math.sqrt(elongation * 1.1)),
        cell_angle=angle,
        cell_harmonics=random_harmonics(rng, 0.10),
        mitotic=False,
    )


def normalised_radius(
    ys: np.ndarray,
    xs: np.ndarray,
    centre: tuple[float, float],
    axes: tuple[float, float],
    angle: float,
    harmonics: np.ndarray,
) -> np.ndarray:
    """1 on the boundary of a wobbly ellipse, < 1 inside; distances scale linearly."""
    dy = (ys - centre[0]).astype(np.float32)
    dx = (xs - centre[1]).astype(np.float32)
    u = (dx * math.cos(angle) + dy * math.sin(angle)) / axes[0]
    v = (-dx * math.sin(angle) + dy * math.cos(angle)) / axes[1]
    radius = np.hypot(u, v)
    # cos(k theta + phase) as the real part of a unit complex number to the k-th power.
    direction = (u + 1j * v) / np.maximum(radius, 1e-6)
    power = direction * direction
    wobble = 1.0
    for amplitude, phase in harmonics:
        wobble = wobble + amplitude * (power * complex(math.cos(phase), math.sin(phase))).real
        power = power * direction
    return radius / wobble


def window(centre: tuple[float, float], radius: float, size_px: int) -> tuple[slice, slice]:
    """Rows and columns of the square of half-side `radius` around `centre`, clipped to the image."""
    r0, c0 = (max(0, int(math.floor(v - radius))) for v in centre)
    r1, c1 = (min(size_px, int(math.ceil(v + radius)) + 1) for v in centre)
    return slice(r0, max(r0, r1)), slice(c0, max(c0, c1))


def rasterise(cells: list[Cell], size_px: int, scale: float) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Cell and nucleus label images (uint16 (H, W)) and the indices of the cells kept.

    Cells without a visible nucleus or too small are dropped; kept cell k (in `cells` order) has id k + 1.
    """
    best = np.full((size_px, size_px), np.inf, dtype=np.float32)
    owner = np.zeros((size_px, size_px), dtype=np.int32)
    nucleus_owner = np.zeros((size_px, size_px), dtype=np.int32)
    nucleus_fraction = []
    for index, cell in enumerate(cells, start=1):
        rows, cols = window(cell.cell_centre, 1.25 * max(cell.cell_axes), size_px)
        ys, xs = np.ogrid[rows, cols]
        rho = normalised_radius(ys, xs, cell.cell_centre, cell.cell_axes, cell.cell_angle, cell.cell_harmonics)
        region_best = best[rows, cols]
        wins = (rho < 1.0) & (rho < region_best)
        region_best[wins] = rho[wins]
        owner[rows, cols][wins] = index

        rows, cols = window(cell.nucleus_centre, 1.2 * max(cell.nucleus_axes), size_px)
        ys, xs = np.ogrid[rows, cols]
        rho_n = normalised_radius(
            ys, xs, cell.nucleus_centre, cell.nucleus_axes, cell.nucleus_angle, cell.nucleus_harmonics
        )
        inside = rho_n < 1.0
        nucleus_owner[rows, cols][inside] = index
        owner[rows, cols][inside] = index  # a nucleus always belongs to its own cell
        full_area = math.pi * cell.nucleus_axes[0] * cell.nucleus_axes[1]
        nucleus_fraction.append(inside.sum() / full_area)

    # Keep one connected piece per cell (the one holding its nucleus) and drop cells that the
    # HPA segmenter would also drop: nucleus mostly outside the image, or under its minimum size.
    min_cell_area = 5500 * scale**2
    cell_labels = np.zeros((size_px, size_px), dtype=np.uint16)
    nuclei_labels = np.zeros((size_px, size_px), dtype=np.uint16)
    kept: list[int] = []
    objects = ndi.find_objects(owner)
    for index in range(1, len(cells) + 1):
        box = objects[index - 1]
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


def edge_distance(cell_labels: np.ndarray) -> np.ndarray:
    """Distance (px, float32 (H, W)) to the nearest cell border; computed at half resolution for speed."""
    small = cell_labels[::2, ::2]
    border = np.zeros(small.shape, dtype=bool)
    border[:-1] |= small[:-1] != small[1:]
    border[:, :-1] |= small[:, :-1] != small[:, 1:]
    distance = ndi.distance_transform_edt(~border).astype(np.float32) * 2.0
    distance = np.repeat(np.repeat(distance, 2, axis=0), 2, axis=1)
    return distance[: cell_labels.shape[0], : cell_labels.shape[1]]
