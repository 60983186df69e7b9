"""Green, the protein channel: one painter per class, keyed by the class's name in `CLASS_NAMES`.

Each painter draws its class's pattern in one cell's box, with a peak of about 1, from the cell's
maps and the structures its reference channels show (so microtubules, ER and nucleoli in green
lie where red, yellow and blue show them). `paint_green` adds the patterns of a cell's classes to
a faint autofluorescence every cell has and scales the sum by the field's staining strength and
a per-cell brightness. Negative has no painter: a negative cell shows only autofluorescence.
"""

import math
from collections.abc import Callable

import numpy as np

from ml.constants import CLASS_NAMES, NEGATIVE_CLASS
from ml.synth.drawing import sample_points, splat, walks
from ml.synth.layout import normalised_radius, random_harmonics
from ml.synth.references import CellMaps, Structures

Painter = Callable[[np.random.Generator, CellMaps, Structures], np.ndarray | float]


def paint_green(
    rng: np.random.Generator,
    classes: tuple[int, ...],
    cell: CellMaps,
    structures: Structures,
    *,
    green_gain: float,
) -> np.ndarray:
    """The green channel of one cell's box showing `classes`; `green_gain` is the field's staining strength."""
    green = 0.03 * np.where(cell.nucleus, 0.5, 1.0) * cell.edge_dimming
    for label in classes:
        if label != NEGATIVE_CLASS:
            green = green + rng.uniform(0.7, 1.0) * PAINTERS[CLASS_NAMES[label]](rng, cell, structures)
    return green * green_gain * float(np.exp(rng.normal(0.0, 0.3))) * 0.6


def paint_nucleoplasm(rng: np.random.Generator, cell: CellMaps, structures: Structures) -> np.ndarray:
    """The whole nucleus, grainy, sparing the nucleoli."""
    nucleoli = np.minimum(structures.nucleoli_map, 1.0)
    return cell.soft_nucleus * (0.85 + 0.3 * cell.grain) * (1.0 - 0.7 * nucleoli) * 0.7


def paint_nuclear_membrane(rng: np.random.Generator, cell: CellMaps, structures: Structures) -> np.ndarray:
    """A thin rim along the nucleus outline."""
    return np.exp(-((cell.nucleus_distance / (3.5 * cell.scale + 0.8)) ** 2))


def paint_nucleoli(rng: np.random.Generator, cell: CellMaps, structures: Structures) -> np.ndarray | float:
    """The nucleoli that blue shows dark: 2-4 large round spots inside the nucleus."""
    return np.minimum(structures.nucleoli_map, 1.0)


def paint_nucleoli_fibrillar_center(rng: np.random.Generator, cell: CellMaps, structures: Structures) -> np.ndarray:
    """Clusters of 2-4 small bright dots within each nucleolus."""
    nucleoli = structures.nucleoli
    if len(nucleoli) == 0:
        return np.zeros(cell.shape, dtype=np.float32)
    per = rng.integers(2, 5, len(nucleoli))
    centres = np.repeat(nucleoli, per, axis=0) + rng.normal(0, 0.6 * structures.nucleolus_sigma, (per.sum(), 2))
    return 1.4 * splat(cell.shape, centres[:, 0], centres[:, 1], 2.2 * cell.scale + 0.6, lines=False)


def paint_nuclear_speckles(rng: np.random.Generator, cell: CellMaps, structures: Structures) -> np.ndarray:
    """Many (18-31) small spots all over the nucleus, over a faint nucleoplasm."""
    spots = _nuclear_spots(rng, cell, int(rng.integers(18, 32)), 3.5 * cell.scale + 0.8)
    return spots * 0.9 + 0.12 * cell.soft_nucleus


def paint_nuclear_bodies(rng: np.random.Generator, cell: CellMaps, structures: Structures) -> np.ndarray:
    """A few (1-5) bright spots in the nucleus."""
    return _nuclear_spots(rng, cell, int(rng.integers(1, 6)), 4.0 * cell.scale + 0.8) * 1.3


def paint_endoplasmic_reticulum(rng: np.random.Generator, cell: CellMaps, structures: Structures) -> np.ndarray:
    """The reticulum that yellow shows, dimming along the cell border."""
    return structures.er * cell.edge_dimming


def paint_golgi_apparatus(rng: np.random.Generator, cell: CellMaps, structures: Structures) -> np.ndarray:
    """A compact ribbon of blobs hugging one side of the nucleus."""
    ys, xs = np.indices(cell.shape)
    angle = np.arctan2(ys - cell.nucleus_centre[0], xs - cell.nucleus_centre[1])
    side = rng.uniform(-np.pi, np.pi)
    facing = np.cos(angle - side) > np.cos(rng.uniform(0.5, 0.9))
    region = cell.cytoplasm & facing & (cell.nucleus_distance < 0.35 * cell.nucleus_radius)
    points = sample_points(rng, region, int(rng.integers(25, 45)))
    return 1.3 * np.minimum(splat(cell.shape, points[:, 0], points[:, 1], 4.0 * cell.scale + 0.8, lines=False), 1.0)


def paint_intermediate_filaments(rng: np.random.Generator, cell: CellMaps, structures: Structures) -> np.ndarray:
    """A wavy cage of long filaments wound around the nucleus, not radiating from one point."""
    centre, rn = cell.nucleus_centre, cell.nucleus_radius
    count = int(rng.integers(30, 45))
    start_angle = rng.uniform(0, 2 * np.pi, count)
    start_radius = rn * rng.uniform(1.05, 1.8, count)
    starts = np.stack(
        [centre[0] + start_radius * np.sin(start_angle), centre[1] + start_radius * np.cos(start_angle)], axis=1
    )
    heading = start_angle + np.pi / 2 + rng.normal(0, 0.5, count)
    ys, xs = walks(rng, starts, heading, rng.uniform(0.8, 1.6, count) * cell.cell_radius, 0.06)
    return 1.1 * splat(cell.shape, ys, xs, 1.6 * cell.scale + 0.5, lines=True)


def paint_actin_filaments(rng: np.random.Generator, cell: CellMaps, structures: Structures) -> np.ndarray:
    """Straight parallel stress fibres crossing the whole cell at one orientation."""
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(14, 20) * cell.scale + 2
    across = cell.ys * math.cos(angle) - cell.xs * math.sin(angle)
    wave = (0.5 + 0.5 * np.cos(2 * np.pi * across / period + 2.0 * (cell.grain - 0.5))) ** 10
    return 1.1 * wave * (0.5 + cell.grain)


def paint_microtubules(rng: np.random.Generator, cell: CellMaps, structures: Structures) -> np.ndarray:
    """The fibres that red shows, radiating from the centrosome, over a diffuse pool."""
    return (0.2 + structures.microtubules) * cell.edge_dimming


def paint_mitotic_spindle(rng: np.random.Generator, cell: CellMaps, structures: Structures) -> np.ndarray | float:
    """The bipolar spindle of a dividing cell; nothing in any other cell."""
    return structures.spindle if structures.spindle is not None else 0.0


def paint_centrosome(rng: np.random.Generator, cell: CellMaps, structures: Structures) -> np.ndarray:
    """One or two bright dots at the centrosome, next to the nucleus."""
    count = int(rng.integers(1, 3))
    dots = structures.centrosome[None, :] + rng.normal(0, 4 * cell.scale + 1, (count, 2))
    return 1.6 * splat(cell.shape, dots[:, 0], dots[:, 1], 3.0 * cell.scale + 0.6, lines=False)


def paint_plasma_membrane(rng: np.random.Generator, cell: CellMaps, structures: Structures) -> np.ndarray:
    """A thin line along the cell border."""
    return np.exp(-((cell.edge_distance / (3.5 * cell.scale + 0.8)) ** 2))


def paint_mitochondria(rng: np.random.Generator, cell: CellMaps, structures: Structures) -> np.ndarray:
    """Many short, bent tubules, densest around the nucleus."""
    count = int(rng.integers(120, 200))
    weight = np.exp(-np.maximum(cell.nucleus_distance, 0) / (0.8 * cell.nucleus_radius))
    starts = sample_points(rng, cell.cytoplasm, count, weight)
    angles = rng.uniform(0, 2 * np.pi, count)
    ys, xs = walks(rng, starts, angles, rng.uniform(10, 28, count) * cell.scale + 3, 0.25)
    return 1.2 * splat(cell.shape, ys, xs, 1.8 * cell.scale + 0.5, lines=True)


def paint_aggresome(rng: np.random.Generator, cell: CellMaps, structures: Structures) -> np.ndarray:
    """One large bright irregular body next to the nucleus."""
    centre, rn = cell.nucleus_centre, cell.nucleus_radius
    angle = rng.uniform(0, 2 * np.pi)
    distance = rn * rng.uniform(1.25, 1.5)
    blob_centre = (centre[0] + distance * math.sin(angle), centre[1] + distance * math.cos(angle))
    radius = rn * rng.uniform(0.3, 0.42)
    rho = normalised_radius(cell.ys, cell.xs, blob_centre, (radius, radius * 0.8), angle, random_harmonics(rng, 0.12))
    return 1.5 * np.clip((1.0 - rho) * 3.0, 0.0, 1.0)


def paint_cytosol(rng: np.random.Generator, cell: CellMaps, structures: Structures) -> np.ndarray:
    """The whole cytoplasm, grainy, with little in the nucleus."""
    return (0.85 + 0.3 * cell.grain) * 0.55 * np.where(cell.nucleus, 0.1, 1.0) * cell.edge_dimming


def paint_vesicles(rng: np.random.Generator, cell: CellMaps, structures: Structures) -> np.ndarray:
    """Vesicles and punctate cytosolic patterns: many (40-89) small dots scattered over the cytoplasm."""
    points = sample_points(rng, cell.cytoplasm, int(rng.integers(40, 90)))
    return 1.2 * splat(cell.shape, points[:, 0], points[:, 1], 2.8 * cell.scale + 0.6, lines=False)


def _nuclear_spots(rng: np.random.Generator, cell: CellMaps, count: int, sigma: float) -> np.ndarray:
    points = sample_points(rng, cell.nucleus_rho < 0.8, count)
    return splat(cell.shape, points[:, 0], points[:, 1], sigma, lines=False)


PAINTERS: dict[str, Painter] = {
    "Nucleoplasm": paint_nucleoplasm,
    "Nuclear membrane": paint_nuclear_membrane,
    "Nucleoli": paint_nucleoli,
    "Nucleoli fibrillar center": paint_nucleoli_fibrillar_center,
    "Nuclear speckles": paint_nuclear_speckles,
    "Nuclear bodies": paint_nuclear_bodies,
    "Endoplasmic reticulum": paint_endoplasmic_reticulum,
    "Golgi apparatus": paint_golgi_apparatus,
    "Intermediate filaments": paint_intermediate_filaments,
    "Actin filaments": paint_actin_filaments,
    "Microtubules": paint_microtubules,
    "Mitotic spindle": paint_mitotic_spindle,
    "Centrosome": paint_centrosome,
    "Plasma membrane": paint_plasma_membrane,
    "Mitochondria": paint_mitochondria,
    "Aggresome": paint_aggresome,
    "Cytosol": paint_cytosol,
    "Vesicles and punctate cytosolic patterns": paint_vesicles,
}
