"""Green in v2 fields: one painter per class, each drawing the pattern as it looks in HPA images.

Every painter returns the pattern in one cell's box with a peak of about 1. Besides its
specific structure, most patterns carry a faint diffuse share of the same compartment (real
stainings are never perfectly specific), and cytoplasmic patterns follow the cell's thickness,
so they fade into the thin border as real ones do:
- nuclear: nucleoplasm (fine-grained, sparing nucleoli), nuclear membrane (a thin rim with
  uneven brightness), nucleoli (1-5 bright irregular bodies), fibrillar centres (clusters of
  small dots inside the nucleoli), speckles (10-40 irregular blobs of varied size over a dim
  nucleoplasm, sparing nucleoli), nuclear bodies (1-8 small round dots);
- cytoplasmic: ER (yellow's network), Golgi (a compact ribbon of tubules and blobs on one side
  of the nucleus), intermediate filaments (long wavy bundles wound around the nucleus out to the
  periphery), actin (straight stress fibres along the cell's long axis, brightest near the
  border, plus cortical actin), microtubules (red's filaments), mitochondria (a network of
  short tubules, densest around the nucleus), centrosome (1-2 dots next to the nucleus),
  plasma membrane (the outline, with fuzzy protrusions), aggresome (one bright perinuclear
  blob), cytosol (smooth, filling the cytoplasm, dim in the nucleus), vesicles (many small dots
  of varied size all over the cytoplasm);
- mitotic spindle: the bipolar spindle, in dividing cells only.
"""

import math
from collections.abc import Callable

import numpy as np

from ml.constants import CLASS_NAMES, NEGATIVE_CLASS
from ml.synth.drawing import sample_points, splat, walks
from ml.synth.layout import normalised_radius
from ml.synth.references import Structures
from ml.synth.v2.layout import _harmonics
from ml.synth.v2.references import CellMapsV2

Painter = Callable[[np.random.Generator, CellMapsV2, Structures], np.ndarray | float]


def paint_green(
    rng: np.random.Generator,
    classes: tuple[int, ...],
    maps: CellMapsV2,
    structures: Structures,
    *,
    green_gain: float,
) -> np.ndarray:
    """The green channel of one cell's box showing `classes`, scaled by the field's staining strength."""
    base = maps.base
    green = 0.035 * maps.thickness * np.where(base.nucleus, 0.6, 1.0)
    for label in classes:
        if label != NEGATIVE_CLASS:
            green = green + rng.uniform(0.6, 1.0) * PAINTERS[CLASS_NAMES[label]](rng, maps, structures)
    # Fine granularity over every pattern, as real stainings have.
    return green * (0.7 + 0.6 * maps.speckle) * green_gain * float(np.exp(rng.normal(0.0, 0.35)))


def _spots(rng, maps: CellMapsV2, region: np.ndarray, count: int, sigma: float, weight=None, spread=0.4) -> np.ndarray:
    """`count` Gaussian spots in `region`, each with its own size and brightness."""
    points = sample_points(rng, region, count, weight)
    if len(points) == 0:
        return np.zeros(maps.base.shape, dtype=np.float32)
    shape = maps.base.shape
    sizes = np.exp(rng.normal(0, spread, len(points)))
    # Spots in three size groups keep the cost at three filters per pattern.
    result = np.zeros(shape, dtype=np.float32)
    groups = np.digitize(sizes, [0.8, 1.25])
    for group, factor in enumerate((0.7, 1.0, 1.5)):
        chosen = points[groups == group]
        if len(chosen):
            result += splat(shape, chosen[:, 0], chosen[:, 1], sigma * factor, lines=False) * rng.uniform(0.6, 1.0)
    return result


def paint_nucleoplasm(rng, maps: CellMapsV2, structures: Structures) -> np.ndarray:
    base = maps.base
    nucleoli = np.minimum(structures.nucleoli_map, 1.0)
    return base.soft_nucleus * (0.6 + 0.5 * maps.chromatin) * (1.0 - 0.75 * nucleoli) * 0.75


def paint_nuclear_membrane(rng, maps: CellMapsV2, structures: Structures) -> np.ndarray:
    base = maps.base
    width = rng.uniform(2.5, 4.0) * base.scale + 0.7
    rim = np.exp(-(((base.nucleus_distance + 1.5 * base.scale) / width) ** 2))
    return rim * (0.55 + 0.9 * maps.speckle) * 0.9 + 0.08 * base.soft_nucleus


def paint_nucleoli(rng, maps: CellMapsV2, structures: Structures) -> np.ndarray:
    base = maps.base
    return np.minimum(structures.nucleoli_map, 1.0) * (0.8 + 0.4 * maps.speckle) + 0.05 * base.soft_nucleus


def paint_nucleoli_fibrillar_center(rng, maps: CellMapsV2, structures: Structures) -> np.ndarray:
    base = maps.base
    nucleoli = structures.nucleoli
    if len(nucleoli) == 0:
        return np.zeros(base.shape, dtype=np.float32)
    per = rng.integers(3, 9, len(nucleoli))
    centres = np.repeat(nucleoli, per, axis=0) + rng.normal(0, 0.5 * structures.nucleolus_sigma, (per.sum(), 2))
    dots = splat(base.shape, centres[:, 0], centres[:, 1], 1.8 * base.scale + 0.6, lines=False)
    return 1.3 * np.minimum(dots, 1.2) + 0.05 * base.soft_nucleus


def paint_nuclear_speckles(rng, maps: CellMapsV2, structures: Structures) -> np.ndarray:
    base = maps.base
    region = (base.nucleus_rho < 0.85) & (np.asarray(structures.nucleoli_map + 0 * base.nucleus_rho) < 0.3)
    spots = _spots(rng, maps, region, int(rng.integers(10, 41)), 4.0 * base.scale + 0.8, spread=0.5)
    spots = spots * (0.6 + 0.8 * maps.speckle)
    nucleoli = np.minimum(structures.nucleoli_map, 1.0)
    return np.minimum(spots, 1.2) + 0.2 * base.soft_nucleus * (1 - nucleoli)


def paint_nuclear_bodies(rng, maps: CellMapsV2, structures: Structures) -> np.ndarray:
    base = maps.base
    spots = _spots(rng, maps, base.nucleus_rho < 0.8, int(rng.integers(1, 9)), 3.5 * base.scale + 0.8, spread=0.3)
    return 1.3 * np.minimum(spots, 1.0) + 0.06 * base.soft_nucleus


def paint_endoplasmic_reticulum(rng, maps: CellMapsV2, structures: Structures) -> np.ndarray:
    return structures.er * (0.8 + 0.4 * maps.speckle)


def paint_golgi_apparatus(rng, maps: CellMapsV2, structures: Structures) -> np.ndarray:
    """A ribbon hugging one side of the nucleus: short tubules and blobs along an arc."""
    base = maps.base
    centre, rn = base.nucleus_centre, base.nucleus_radius
    side = rng.uniform(-np.pi, np.pi)
    span = rng.uniform(0.5, 1.3)  # half-angle of the arc
    count = int(rng.integers(30, 70))
    theta = side + rng.uniform(-span, span, count)
    radius = rn * (1.05 + np.abs(rng.normal(0, 0.18, count)))
    starts = np.stack([centre[0] + radius * np.sin(theta), centre[1] + radius * np.cos(theta)], axis=1)
    heading = theta + np.pi / 2 + rng.normal(0, 0.6, count)
    ys, xs = walks(rng, starts, heading, rng.uniform(6, 22, count) * base.scale + 2, 0.3)
    tubules = splat(base.shape, ys, xs, 1.5 * base.scale + 0.6, lines=True)
    blobs = splat(base.shape, starts[:, 0], starts[:, 1], 4.0 * base.scale + 0.8, lines=False)
    ribbon = np.minimum(0.7 * tubules + 0.8 * blobs, 1.3) * base.cytoplasm
    return ribbon + 0.03 * maps.thickness


def paint_intermediate_filaments(rng, maps: CellMapsV2, structures: Structures) -> np.ndarray:
    """Long wavy bundles wound around the nucleus and reaching the periphery."""
    base = maps.base
    centre, rn = base.nucleus_centre, base.nucleus_radius
    count = int(rng.integers(40, 80))
    start_angle = rng.uniform(0, 2 * np.pi, count)
    start_radius = rn * rng.uniform(1.0, 1.6, count)
    starts = np.stack(
        [centre[0] + start_radius * np.sin(start_angle), centre[1] + start_radius * np.cos(start_angle)], axis=1
    )
    heading = start_angle + np.pi / 2 * rng.choice([-1, 1], count) + rng.normal(0, 0.6, count)
    ys, xs = walks(rng, starts, heading, rng.uniform(0.8, 2.0, count) * base.cell_radius, 0.04)
    filaments = splat(base.shape, ys, xs, 1.2 * base.scale + 0.6, lines=True)
    return np.minimum(filaments, 1.3) * (0.6 + 0.4 * maps.thickness) + 0.08 * maps.thickness * base.cytoplasm


def paint_actin_filaments(rng, maps: CellMapsV2, structures: Structures) -> np.ndarray:
    """Stress fibres: straight lines along the long axis, brightest near the border; cortical actin."""
    base = maps.base
    count = int(rng.integers(25, 60))
    starts = sample_points(rng, base.mask, count)
    reach = max(maps.cell_axes) * 2.2
    angles = maps.cell_angle + rng.normal(0, 0.2, count) + np.pi * rng.integers(0, 2, count)
    # Each fibre runs both ways from its point: start half its length back.
    lengths = rng.uniform(0.5, 1.0, count) * reach
    back = starts - 0.5 * lengths[:, None] * np.stack([np.sin(angles), np.cos(angles)], axis=1)
    ys, xs = walks(rng, back, angles, lengths, 0.004)
    fibres = splat(base.shape, ys, xs, 1.3 * base.scale + 0.6, lines=True)
    near_border = np.exp(-base.edge_distance / (0.35 * base.cell_radius))
    cortex = np.exp(-base.edge_distance / (5 * base.scale + 1))
    fibres = 0.5 * np.minimum(fibres, 1.2) * (0.4 + 0.8 * near_border) + 0.45 * cortex
    return fibres * np.where(base.nucleus, 0.4, 1.0) + 0.25 * maps.thickness


def paint_microtubules(rng, maps: CellMapsV2, structures: Structures) -> np.ndarray:
    return (0.12 * maps.thickness + 0.9 * np.minimum(structures.microtubules, 1.2)) * np.where(
        maps.base.nucleus, 0.5, 1.0
    )


def paint_mitotic_spindle(rng, maps: CellMapsV2, structures: Structures) -> np.ndarray | float:
    if structures.spindle is None:
        return 0.0
    return structures.spindle + 0.05 * maps.base.mask


def paint_centrosome(rng, maps: CellMapsV2, structures: Structures) -> np.ndarray:
    base = maps.base
    count = int(rng.integers(1, 3))
    dots = structures.centrosome[None, :] + rng.normal(0, 3 * base.scale + 1, (count, 2))
    spots = splat(base.shape, dots[:, 0], dots[:, 1], 3.0 * base.scale + 0.7, lines=False)
    halo = splat(base.shape, dots[:1, 0], dots[:1, 1], 9.0 * base.scale + 1, lines=False)
    return 1.4 * np.minimum(spots, 1.0) + 0.25 * halo + 0.03 * maps.thickness


def paint_plasma_membrane(rng, maps: CellMapsV2, structures: Structures) -> np.ndarray:
    """The outline, of uneven brightness, with a little fuzz of protrusions just inside."""
    base = maps.base
    width = rng.uniform(2.5, 5.0) * base.scale + 0.8
    line = np.exp(-((base.edge_distance / width) ** 2))
    fuzz = np.exp(-base.edge_distance / (15 * base.scale + 2)) * maps.speckle
    return line * (0.6 + 0.8 * maps.speckle) + 0.35 * fuzz + 0.06 * maps.thickness


def paint_mitochondria(rng, maps: CellMapsV2, structures: Structures) -> np.ndarray:
    base = maps.base
    count = int(rng.integers(150, 300))
    weight = np.exp(-np.maximum(base.nucleus_distance, 0) / (0.7 * base.nucleus_radius)) * base.cytoplasm
    starts = sample_points(rng, base.cytoplasm, count, weight + 1e-6)
    angles = rng.uniform(0, 2 * np.pi, count)
    ys, xs = walks(rng, starts, angles, rng.uniform(8, 35, count) * base.scale + 3, 0.2)
    tubules = splat(base.shape, ys, xs, 1.4 * base.scale + 0.6, lines=True)
    return np.minimum(tubules, 1.3) * base.cytoplasm + 0.05 * maps.thickness


def paint_aggresome(rng, maps: CellMapsV2, structures: Structures) -> np.ndarray:
    """One bright, compact, slightly irregular body beside the nucleus, often at the centrosome."""
    base = maps.base
    centre, rn = base.nucleus_centre, base.nucleus_radius
    if rng.random() < 0.6:
        blob_centre = tuple(structures.centrosome)
    else:
        angle = rng.uniform(0, 2 * np.pi)
        distance = rn * rng.uniform(1.05, 1.35)
        blob_centre = (centre[0] + distance * math.sin(angle), centre[1] + distance * math.cos(angle))
    radius = rn * rng.uniform(0.15, 0.35)
    angle = rng.uniform(0, np.pi)
    rho = normalised_radius(
        base.ys, base.xs, blob_centre, (radius, radius * rng.uniform(0.6, 0.9)), angle, _harmonics(rng, 0.2, 4)
    )
    body = np.clip((1.0 - rho) * 2.5, 0.0, 1.0) * (0.8 + 0.4 * maps.speckle)
    return 1.5 * body + 0.06 * maps.thickness * base.cytoplasm


def paint_cytosol(rng, maps: CellMapsV2, structures: Structures) -> np.ndarray:
    base = maps.base
    return maps.thickness * (0.8 + 0.4 * base.grain) * 0.6 * np.where(base.nucleus, rng.uniform(0.1, 0.4), 1.0)


def paint_vesicles(rng, maps: CellMapsV2, structures: Structures) -> np.ndarray:
    base = maps.base
    count = int(rng.integers(60, 220))
    spots = _spots(rng, maps, base.cytoplasm, count, 2.4 * base.scale + 0.7, weight=maps.thickness + 0.2, spread=0.45)
    return 1.2 * np.minimum(spots, 1.2) + 0.04 * maps.thickness


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
