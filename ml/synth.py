"""Synthetic HPA-like fields with per-cell truth, for training and measuring without real data.

A field is drawn in three steps. Layout: nuclei are thrown onto an area a little larger than
the image (so some cells are cut by the border) and each cell grows from its nucleus as an
irregular ellipse; overlapping cells split by a weighted Voronoi rule, so they touch along curved
borders. Reference channels: blue is the nucleus (dark nucleoli, bright condensed chromosomes
in mitotic cells), red are microtubules radiating from the centrosome, yellow a reticular ER
that thins out towards the cell border; both dim along cell borders, which is what lets a
segmenter separate touching cells. Green follows each cell's classes with one visually distinct
pattern per class, and some cells of an image do not show the image's labels (weak labels).
Optics: blur, offset, shot and read noise, per-cell and per-image intensity changes.

Sizes are drawn for 2048 px fields (cells 250-400 px across, as in HPA) and scale with `size_px`.

`python -m ml synth --out DIR --n-images N --seed S [--size PX] [--bit-depth 8|16]` writes the
Kaggle layout (`train.csv`, `{ID}_{red,green,blue,yellow}.png`), `truth/{ID}_cells.png` and
`truth/{ID}_nuclei.png` (uint16), and `solution.csv` (one `label 1 mask` triple per true label
of every cell).
"""

import argparse
import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

from ml.constants import CHANNELS, CLASS_NAMES, NEGATIVE_CLASS, NUM_CLASSES

REFERENCE_SIZE_PX = 2048

# Image-level label frequencies, imbalanced like HPA's train.csv (nucleoplasm and cytosol
# dominate) but with a floor so that every class appears in a few hundred training fields.
CLASS_FREQUENCIES: tuple[float, ...] = (
    0.30, 0.06, 0.10, 0.05, 0.06, 0.08, 0.05, 0.08, 0.05, 0.04,
    0.04, 0.04, 0.06, 0.10, 0.09, 0.04, 0.20, 0.06, 0.04,
)  # fmt: skip
LABELS_PER_IMAGE_PROBABILITIES = (0.55, 0.33, 0.12)  # 1, 2 or 3 labels per image
NUCLEAR_CLASSES = frozenset(range(0, 6))
MITOTIC_SPINDLE_CLASS = 11
MICROTUBULES_CLASS = 10


@dataclass(frozen=True)
class SyntheticField:
    """One synthetic field and its truth; cell id i (1..N) has the classes `cell_classes[i - 1]`."""

    image: np.ndarray  # float32 (4, H, W) in CHANNELS order, values in [0, 1]
    cell_labels: np.ndarray  # uint16 (H, W), 0 = background
    nuclei_labels: np.ndarray  # uint16 (H, W), nucleus i lies inside cell i
    cell_classes: tuple[tuple[int, ...], ...]
    image_labels: tuple[int, ...]  # the weak label of the field, as train.csv gives it

    @property
    def cell_count(self) -> int:
        return len(self.cell_classes)


@dataclass(frozen=True)
class _Cell:
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


def synthesize_field(
    rng: np.random.Generator,
    size_px: int = REFERENCE_SIZE_PX,
    *,
    image_labels: tuple[int, ...] | None = None,
) -> SyntheticField:
    """Draw one square field; `image_labels` fixes the field's classes instead of sampling them."""
    if size_px < 128:
        raise ValueError(f"size_px={size_px} is too small for whole cells; use 128 px or more.")
    scale = size_px / REFERENCE_SIZE_PX
    labels = tuple(sorted(image_labels)) if image_labels is not None else _sample_image_labels(rng)
    cells = _place_cells(rng, size_px, scale, need_mitotic=MITOTIC_SPINDLE_CLASS in labels)
    cell_labels, nuclei_labels, kept = _rasterise(cells, size_px, scale)
    cells = [cells[i] for i in kept]
    cell_classes = _assign_classes(rng, cells, labels)

    edge_distance = _edge_distance(cell_labels)
    textures = _Textures(rng, size_px, scale)
    image = np.zeros((len(CHANNELS), size_px, size_px), dtype=np.float32)
    green_gain = rng.uniform(0.35, 1.0)
    for index, (cell, classes) in enumerate(zip(cells, cell_classes)):
        _render_cell(
            rng,
            image,
            cell=cell,
            cell_id=index + 1,
            classes=classes,
            cell_labels=cell_labels,
            edge_distance=edge_distance,
            textures=textures,
            scale=scale,
            green_gain=green_gain,
        )
    _apply_optics(rng, image, scale)
    return SyntheticField(
        image=image,
        cell_labels=cell_labels,
        nuclei_labels=nuclei_labels,
        cell_classes=tuple(cell_classes),
        image_labels=tuple(sorted({c for classes in cell_classes for c in classes} & set(labels)) or labels),
    )


def _sample_image_labels(rng: np.random.Generator) -> tuple[int, ...]:
    frequencies = np.asarray(CLASS_FREQUENCIES)
    if rng.random() < frequencies[NEGATIVE_CLASS] / frequencies.sum():
        return (NEGATIVE_CLASS,)
    frequencies = frequencies.copy()
    frequencies[NEGATIVE_CLASS] = 0.0
    count = 1 + rng.choice(len(LABELS_PER_IMAGE_PROBABILITIES), p=LABELS_PER_IMAGE_PROBABILITIES)
    chosen = rng.choice(NUM_CLASSES, size=count, replace=False, p=frequencies / frequencies.sum())
    return tuple(sorted(int(c) for c in chosen))


def _harmonics(rng: np.random.Generator, max_amplitude: float) -> np.ndarray:
    return np.stack([rng.uniform(0, max_amplitude, 3), rng.uniform(0, 2 * np.pi, 3)], axis=1)


def _place_cells(rng: np.random.Generator, size_px: int, scale: float, *, need_mitotic: bool) -> list[_Cell]:
    """Dart-throw nuclei over the image plus a margin; cell radii overlap so neighbours touch."""
    margin = 80 * scale
    spacing = rng.uniform(0.6, 0.9)  # < 1: confluent fields; near 1: gaps between cells
    mitotic_rate = 0.025
    centres: list[tuple[float, float]] = []
    radii: list[float] = []
    cells: list[_Cell] = []
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
) -> _Cell:
    angle = rng.uniform(0, np.pi)
    if mitotic:
        # Condensed chromosomes: a bright thin plate in a round cell.
        nucleus_axes = (nucleus_radius * 0.8, nucleus_radius * 0.28)
        cell_axes = (cell_radius, cell_radius * rng.uniform(0.85, 1.0))
        return _Cell(
            nucleus_centre=centre,
            nucleus_axes=nucleus_axes,
            nucleus_angle=angle,
            nucleus_harmonics=_harmonics(rng, 0.03),
            cell_centre=centre,
            cell_axes=cell_axes,
            cell_angle=angle,
            cell_harmonics=_harmonics(rng, 0.03),
            mitotic=True,
        )
    elongation = rng.uniform(1.0, 1.35)
    offset = rng.uniform(0, 0.25 * cell_radius) * np.array([np.sin(angle), np.cos(angle)])
    return _Cell(
        nucleus_centre=(centre[0] + offset[0], centre[1] + offset[1]),
        nucleus_axes=(nucleus_radius * math.sqrt(elongation), nucleus_radius / math.sqrt(elongation)),
        nucleus_angle=angle + rng.normal(0, 0.3),
        nucleus_harmonics=_harmonics(rng, 0.05),
        cell_centre=centre,
        cell_axes=(cell_radius * math.sqrt(elongation * 1.1), cell_radius / math.sqrt(elongation * 1.1)),
        cell_angle=angle,
        cell_harmonics=_harmonics(rng, 0.10),
        mitotic=False,
    )


def _normalised_radius(
    ys: np.ndarray, xs: np.ndarray, centre, axes, angle: float, harmonics: np.ndarray
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


def _window(centre, radius: float, size_px: int) -> tuple[slice, slice]:
    r0, c0 = (max(0, int(math.floor(v - radius))) for v in centre)
    r1, c1 = (min(size_px, int(math.ceil(v + radius)) + 1) for v in centre)
    return slice(r0, max(r0, r1)), slice(c0, max(c0, c1))


def _rasterise(cells: list[_Cell], size_px: int, scale: float) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Cell and nucleus label images; cells without a visible nucleus or too small are dropped."""
    best = np.full((size_px, size_px), np.inf, dtype=np.float32)
    owner = np.zeros((size_px, size_px), dtype=np.int32)
    nucleus_owner = np.zeros((size_px, size_px), dtype=np.int32)
    nucleus_fraction = []
    for index, cell in enumerate(cells, start=1):
        rows, cols = _window(cell.cell_centre, 1.25 * max(cell.cell_axes), size_px)
        ys, xs = np.ogrid[rows, cols]
        rho = _normalised_radius(ys, xs, cell.cell_centre, cell.cell_axes, cell.cell_angle, cell.cell_harmonics)
        region_best = best[rows, cols]
        wins = (rho < 1.0) & (rho < region_best)
        region_best[wins] = rho[wins]
        owner[rows, cols][wins] = index

        rows, cols = _window(cell.nucleus_centre, 1.2 * max(cell.nucleus_axes), size_px)
        ys, xs = np.ogrid[rows, cols]
        rho_n = _normalised_radius(
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
    for index, cell in enumerate(cells, start=1):
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


def _assign_classes(rng: np.random.Generator, cells: list[_Cell], labels: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Each cell shows each image label with a per-field probability; cells showing none are negative."""
    if labels == (NEGATIVE_CLASS,) or not cells:
        return [(NEGATIVE_CLASS,)] * len(cells)
    show_probability = rng.uniform(0.65, 0.95)

    def eligible(cell: _Cell, label: int) -> bool:
        if label == MITOTIC_SPINDLE_CLASS:
            return cell.mitotic
        # Dividing cells have no nuclear envelope, and their microtubules form the spindle.
        return not (cell.mitotic and (label in NUCLEAR_CLASSES or label == MICROTUBULES_CLASS))

    shown = [
        {
            label
            for label in labels
            if eligible(cell, label) and (label == MITOTIC_SPINDLE_CLASS or rng.random() < show_probability)
        }
        for cell in cells
    ]
    for label in labels:
        candidates = [i for i, cell in enumerate(cells) if eligible(cell, label)]
        if candidates and not any(label in s for s in shown):
            shown[int(rng.choice(candidates))].add(label)
    return [tuple(sorted(s)) if s else (NEGATIVE_CLASS,) for s in shown]


def _edge_distance(cell_labels: np.ndarray) -> np.ndarray:
    """Distance (px) to the nearest cell border; computed at half resolution for speed."""
    small = cell_labels[::2, ::2]
    border = np.zeros(small.shape, dtype=bool)
    border[:-1] |= small[:-1] != small[1:]
    border[:, :-1] |= small[:, :-1] != small[:, 1:]
    distance = ndi.distance_transform_edt(~border).astype(np.float32) * 2.0
    distance = np.repeat(np.repeat(distance, 2, axis=0), 2, axis=1)
    return distance[: cell_labels.shape[0], : cell_labels.shape[1]]


class _Textures:
    """Smooth random fields shared by all cells of a field (sliced per cell, drawn once)."""

    def __init__(self, rng: np.random.Generator, size_px: int, scale: float) -> None:
        # Band-pass noise whose zero crossings form a reticular network (ER); drawn at half
        # resolution, which is fine enough for 6 px meshes and four times cheaper.
        half = (size_px + 1) // 2
        fine = ndi.gaussian_filter(rng.standard_normal((half, half), dtype=np.float32), 1.5 * scale + 0.3)
        coarse = ndi.gaussian_filter(fine, 3.0 * scale + 0.3)
        band = fine - coarse
        band /= band.std() + 1e-6
        fine /= fine.std() + 1e-6
        self.network = _upsample2(np.exp(-((band / 0.45) ** 2)), size_px)
        self.grain = _upsample2(np.clip(0.5 + 0.25 * fine, 0.0, 1.0), size_px)


def _upsample2(image: np.ndarray, size_px: int) -> np.ndarray:
    return ndi.zoom(image, 2, order=1, grid_mode=True, mode="nearest")[:size_px, :size_px]


def _splat(shape: tuple[int, int], ys: np.ndarray, xs: np.ndarray, sigma: float, *, lines: bool) -> np.ndarray:
    """Gaussian spots (or lines drawn as 1 px steps) with a peak of about 1."""
    ys, xs = np.round(ys).astype(np.int64), np.round(xs).astype(np.int64)
    valid = (ys >= 0) & (ys < shape[0]) & (xs >= 0) & (xs < shape[1])
    ys, xs = ys[valid], xs[valid]
    result = np.zeros(shape, dtype=np.float32)
    if len(ys) == 0:
        return result
    # Filter only the box around the points (plus the kernel's reach): most patterns are compact.
    reach = int(math.ceil(3 * sigma)) + 1
    r0, c0 = max(0, ys.min() - reach), max(0, xs.min() - reach)
    r1, c1 = min(shape[0], ys.max() + reach + 1), min(shape[1], xs.max() + reach + 1)
    box_shape = (r1 - r0, c1 - c0)
    canvas = np.bincount((ys - r0) * box_shape[1] + (xs - c0), minlength=box_shape[0] * box_shape[1])
    canvas = ndi.gaussian_filter(canvas.reshape(box_shape).astype(np.float32), sigma, truncate=3.0)
    canvas *= math.sqrt(2 * math.pi) * sigma if lines else 2 * math.pi * sigma**2
    result[r0:r1, c0:c1] = np.minimum(canvas, 1.5)
    return result


def _walks(
    rng: np.random.Generator, starts: np.ndarray, angles: np.ndarray, length_px: np.ndarray, turn_sd: float
) -> tuple[np.ndarray, np.ndarray]:
    """Points every 1 px along smooth random walks (one per start); shorter walks are cut."""
    steps = int(np.ceil(length_px.max())) if len(length_px) else 0
    if steps == 0:
        return np.zeros(0), np.zeros(0)
    heading = angles[:, None] + np.cumsum(rng.normal(0, turn_sd, (len(starts), steps)), axis=1)
    ys = starts[:, :1] + np.cumsum(np.sin(heading), axis=1)
    xs = starts[:, 1:] + np.cumsum(np.cos(heading), axis=1)
    keep = np.arange(steps)[None, :] < length_px[:, None]
    return ys[keep], xs[keep]


def _sample_points(rng: np.random.Generator, region: np.ndarray, count: int, weight: np.ndarray | None = None):
    """`count` random pixel positions (y, x) inside a boolean region, optionally weighted."""
    candidates = np.flatnonzero(region)
    if len(candidates) == 0 or count == 0:
        return np.zeros((0, 2))
    p = None
    if weight is not None:
        p = weight.ravel()[candidates].astype(np.float64)
        p /= p.sum()
    picked = rng.choice(candidates, size=count, p=p)
    ys, xs = np.unravel_index(picked, region.shape)
    return np.stack([ys, xs], axis=1) + rng.uniform(-0.5, 0.5, (count, 2))


def _render_cell(
    rng: np.random.Generator,
    image: np.ndarray,
    *,
    cell: _Cell,
    cell_id: int,
    classes: tuple[int, ...],
    cell_labels: np.ndarray,
    edge_distance: np.ndarray,
    textures: _Textures,
    scale: float,
    green_gain: float,
) -> None:
    size_px = cell_labels.shape[0]
    rows, cols = _window(cell.cell_centre, 1.3 * max(cell.cell_axes) + 4, size_px)
    mask = cell_labels[rows, cols] == cell_id
    if not mask.any():
        return
    shape = mask.shape
    origin = (rows.start, cols.start)
    ys, xs = np.ogrid[rows, cols]
    rho_n = _normalised_radius(ys, xs, cell.nucleus_centre, cell.nucleus_axes, cell.nucleus_angle, cell.nucleus_harmonics)
    rn = cell.nucleus_radius
    rc = cell.cell_radius
    nucleus_distance = (rho_n - 1.0) * rn  # < 0 inside the nucleus, ~ px outside
    nucleus = (rho_n < 1.0) & mask
    cytoplasm = mask & ~nucleus
    soft_nucleus = np.clip(-nucleus_distance / (2.5 * scale + 0.5), 0.0, 1.0)
    edge = edge_distance[rows, cols]
    edge_dimming = 1.0 - 0.65 * np.exp(-edge / (10.0 * scale + 1.0))
    grain = textures.grain[rows, cols]
    network = textures.network[rows, cols]
    local_centre = (cell.nucleus_centre[0] - origin[0], cell.nucleus_centre[1] - origin[1])

    # Organelle positions shared by the reference channels and the green patterns.
    centrosome_angle = rng.uniform(0, 2 * np.pi)
    centrosome = np.array(local_centre) + (rn * rng.uniform(1.1, 1.3)) * np.array(
        [np.sin(centrosome_angle), np.cos(centrosome_angle)]
    )
    nucleoli = _sample_points(rng, rho_n < 0.55, int(rng.integers(2, 5))) if not cell.mitotic else np.zeros((0, 2))
    nucleolus_sigma = rng.uniform(7, 11) * scale + 0.5
    nucleoli_map = (
        _splat(shape, nucleoli[:, 0], nucleoli[:, 1], nucleolus_sigma, lines=False) if len(nucleoli) else 0.0
    )
    spindle_map = _spindle(rng, shape, local_centre, cell, scale) if cell.mitotic else None

    # Blue: DAPI with chromatin grain and darker nucleoli; condensed chromosomes are brighter.
    nucleus_brightness = rng.uniform(0.45, 0.8) * (1.6 if cell.mitotic else 1.0)
    blue = soft_nucleus * nucleus_brightness * (0.75 + 0.35 * grain) * (1.0 - 0.45 * np.minimum(nucleoli_map, 1.0))

    # Red: microtubules radiating from the centrosome over a diffuse tubulin pool.
    if cell.mitotic:
        microtubules = spindle_map
    else:
        count = int(rng.integers(70, 110))
        starts = np.repeat(centrosome[None, :], count, axis=0)
        ray_y, ray_x = _walks(rng, starts, rng.uniform(0, 2 * np.pi, count), rng.uniform(0.8, 1.4, count) * rc, 0.04)
        microtubules = _splat(shape, ray_y, ray_x, 1.2 * scale + 0.4, lines=True)
    red = rng.uniform(0.35, 0.6) * (0.3 + 0.9 * microtubules) * np.where(nucleus, 0.5, 1.0) * edge_dimming

    # Yellow: reticular ER, densest around the nucleus, outlining the nuclear envelope.
    er_density = 0.35 + 0.65 * np.exp(-np.maximum(nucleus_distance, 0) / (0.9 * rn))
    envelope = np.exp(-((nucleus_distance / (4 * scale + 1)) ** 2))
    er = np.where(nucleus, 0.15, (0.25 + 0.75 * network) * er_density) + 0.4 * envelope
    yellow = rng.uniform(0.35, 0.6) * er * edge_dimming

    patterns = {
        0: lambda: soft_nucleus * (0.85 + 0.3 * grain) * (1.0 - 0.7 * np.minimum(nucleoli_map, 1.0)) * 0.7,
        1: lambda: np.exp(-((nucleus_distance / (3.5 * scale + 0.8)) ** 2)),
        2: lambda: np.minimum(nucleoli_map, 1.0),
        3: lambda: _fibrillar_centres(rng, shape, nucleoli, nucleolus_sigma, scale),
        4: lambda: _nuclear_spots(rng, shape, rho_n, int(rng.integers(18, 32)), 3.5 * scale + 0.8) * 0.9
        + 0.12 * soft_nucleus,
        5: lambda: _nuclear_spots(rng, shape, rho_n, int(rng.integers(1, 6)), 4.0 * scale + 0.8) * 1.3,
        6: lambda: er * edge_dimming,
        7: lambda: _golgi(rng, shape, cytoplasm, nucleus_distance, local_centre, rn, scale),
        8: lambda: _intermediate_filaments(rng, shape, local_centre, rn, rc, scale),
        9: lambda: _stress_fibres(rng, ys - origin[0], xs - origin[1], scale, grain),
        10: lambda: (0.2 + microtubules) * edge_dimming,
        11: lambda: spindle_map if spindle_map is not None else 0.0,
        12: lambda: 1.6 * _splat(shape, *_centrosome_dots(rng, centrosome, scale).T, 3.0 * scale + 0.6, lines=False),
        13: lambda: np.exp(-((edge / (3.5 * scale + 0.8)) ** 2)),
        14: lambda: _mitochondria(rng, shape, cytoplasm, nucleus_distance, rn, scale),
        15: lambda: _aggresome(rng, ys - origin[0], xs - origin[1], local_centre, rn),
        16: lambda: (0.85 + 0.3 * grain) * 0.55 * np.where(nucleus, 0.1, 1.0) * edge_dimming,
        17: lambda: 1.2
        * _splat(
            shape,
            *_sample_points(rng, cytoplasm, int(rng.integers(40, 90))).T,
            2.8 * scale + 0.6,
            lines=False,
        ),
    }
    green = 0.03 * np.where(nucleus, 0.5, 1.0) * edge_dimming  # autofluorescence of every cell
    for label in classes:
        if label != NEGATIVE_CLASS:
            green = green + rng.uniform(0.7, 1.0) * patterns[label]()
    green = green * green_gain * float(np.exp(rng.normal(0.0, 0.3))) * 0.6

    for channel, values in (("red", red), ("green", green), ("blue", blue), ("yellow", yellow)):
        target = image[CHANNELS.index(channel), rows, cols]
        target[mask] = np.broadcast_to(values, shape)[mask]


def _fibrillar_centres(rng, shape, nucleoli: np.ndarray, nucleolus_sigma: float, scale: float) -> np.ndarray:
    if len(nucleoli) == 0:
        return np.zeros(shape, dtype=np.float32)
    per = rng.integers(2, 5, len(nucleoli))
    centres = np.repeat(nucleoli, per, axis=0) + rng.normal(0, 0.6 * nucleolus_sigma, (per.sum(), 2))
    return 1.4 * _splat(shape, centres[:, 0], centres[:, 1], 2.2 * scale + 0.6, lines=False)


def _nuclear_spots(rng, shape, rho_n: np.ndarray, count: int, sigma: float) -> np.ndarray:
    points = _sample_points(rng, rho_n < 0.8, count)
    return _splat(shape, points[:, 0], points[:, 1], sigma, lines=False)


def _golgi(rng, shape, cytoplasm, nucleus_distance, centre, rn: float, scale: float) -> np.ndarray:
    """A compact ribbon of blobs hugging one side of the nucleus."""
    ys, xs = np.indices(shape)
    angle = np.arctan2(ys - centre[0], xs - centre[1])
    side = rng.uniform(-np.pi, np.pi)
    facing = np.cos(angle - side) > np.cos(rng.uniform(0.5, 0.9))
    region = cytoplasm & facing & (nucleus_distance < 0.35 * rn)
    points = _sample_points(rng, region, int(rng.integers(25, 45)))
    return 1.3 * np.minimum(_splat(shape, points[:, 0], points[:, 1], 4.0 * scale + 0.8, lines=False), 1.0)


def _intermediate_filaments(rng, shape, centre, rn: float, rc: float, scale: float) -> np.ndarray:
    """A wavy cage of long filaments wound around the nucleus, not radiating from one point."""
    count = int(rng.integers(30, 45))
    start_angle = rng.uniform(0, 2 * np.pi, count)
    start_radius = rn * rng.uniform(1.05, 1.8, count)
    starts = np.stack(
        [centre[0] + start_radius * np.sin(start_angle), centre[1] + start_radius * np.cos(start_angle)], axis=1
    )
    heading = start_angle + np.pi / 2 + rng.normal(0, 0.5, count)
    ys, xs = _walks(rng, starts, heading, rng.uniform(0.8, 1.6, count) * rc, 0.06)
    return 1.1 * _splat(shape, ys, xs, 1.6 * scale + 0.5, lines=True)


def _stress_fibres(rng, ys, xs, scale: float, grain: np.ndarray) -> np.ndarray:
    """Straight parallel bundles crossing the whole cell at one orientation."""
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(14, 20) * scale + 2
    across = ys * math.cos(angle) - xs * math.sin(angle)
    wave = (0.5 + 0.5 * np.cos(2 * np.pi * across / period + 2.0 * (grain - 0.5))) ** 10
    return 1.1 * wave * (0.5 + grain)


def _centrosome_dots(rng, centrosome: np.ndarray, scale: float) -> np.ndarray:
    count = int(rng.integers(1, 3))
    return centrosome[None, :] + rng.normal(0, 4 * scale + 1, (count, 2))


def _mitochondria(rng, shape, cytoplasm, nucleus_distance, rn: float, scale: float) -> np.ndarray:
    """Many short, bent tubules, densest around the nucleus."""
    count = int(rng.integers(120, 200))
    weight = np.exp(-np.maximum(nucleus_distance, 0) / (0.8 * rn))
    starts = _sample_points(rng, cytoplasm, count, weight)
    ys, xs = _walks(rng, starts, rng.uniform(0, 2 * np.pi, count), rng.uniform(10, 28, count) * scale + 3, 0.25)
    return 1.2 * _splat(shape, ys, xs, 1.8 * scale + 0.5, lines=True)


def _aggresome(rng, ys, xs, centre, rn: float) -> np.ndarray:
    """One large bright irregular body next to the nucleus."""
    angle = rng.uniform(0, 2 * np.pi)
    distance = rn * rng.uniform(1.25, 1.5)
    blob_centre = (centre[0] + distance * math.sin(angle), centre[1] + distance * math.cos(angle))
    radius = rn * rng.uniform(0.3, 0.42)
    rho = _normalised_radius(ys, xs, blob_centre, (radius, radius * 0.8), angle, _harmonics(rng, 0.12))
    return 1.5 * np.clip((1.0 - rho) * 3.0, 0.0, 1.0)


def _spindle(rng, shape, centre, cell: _Cell, scale: float) -> np.ndarray:
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
    fibres = _splat(shape, np.concatenate(ys_all), np.concatenate(xs_all), 1.5 * scale + 0.5, lines=True)
    return np.minimum(fibres / 2.5, 1.3)


def _apply_optics(rng: np.random.Generator, image: np.ndarray, scale: float) -> None:
    """Blur, camera offset, shot and read noise, in place; values stay in [0, 1]."""
    blur = rng.uniform(0.8, 1.8) * max(scale, 0.5)
    for channel in range(image.shape[0]):
        plane = ndi.gaussian_filter(image[channel], blur, truncate=3.0)
        plane *= rng.uniform(0.8, 1.2)
        plane += rng.uniform(0.005, 0.03)
        noise = rng.standard_normal(plane.shape, dtype=np.float32)
        plane += noise * (0.006 + 0.03 * np.sqrt(plane))
        np.clip(plane, 0.0, 1.0, out=image[channel])


# ---- command line -------------------------------------------------------------------------


def field_id(seed: int, index: int) -> str:
    return f"synth-s{seed}-{index:05d}"


def write_dataset(out_dir: Path, *, n_images: int, seed: int, size_px: int, bit_depth: int, progress=None) -> None:
    """Write `n_images` fields in Kaggle layout plus truth; field i depends only on (seed, i)."""
    from ml.encoding import SubmissionRow, labels_to_rles, rle_to_kaggle, write_submission
    from ml.io import write_labels_png

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "truth").mkdir(exist_ok=True)
    max_value = 255 if bit_depth == 8 else 65535
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    train_rows, solution_rows = [], []
    for index in range(n_images):
        image_id = field_id(seed, index)
        field = synthesize_field(np.random.default_rng([seed, index]), size_px)
        for channel, plane in zip(CHANNELS, field.image):
            pixels = np.round(plane * max_value).astype(dtype)
            Image.fromarray(pixels).save(out_dir / f"{image_id}_{channel}.png", compress_level=1)
        write_labels_png(out_dir / "truth" / f"{image_id}_cells.png", field.cell_labels)
        write_labels_png(out_dir / "truth" / f"{image_id}_nuclei.png", field.nuclei_labels)
        rles = labels_to_rles(field.cell_labels)
        triples = [
            f"{label} 1 {rle_to_kaggle(rles[cell_id])}"
            for cell_id, classes in enumerate(field.cell_classes, start=1)
            for label in classes
        ]
        solution_rows.append(
            SubmissionRow(image_id=image_id, width=size_px, height=size_px, prediction_string=" ".join(triples))
        )
        train_rows.append((image_id, "|".join(str(label) for label in field.image_labels)))
        if progress is not None:
            progress(index + 1, n_images)
    with open(out_dir / "train.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ID", "Label"])
        writer.writerows(train_rows)
    write_submission(out_dir / "solution.csv", solution_rows)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="folder to write (created if missing)")
    parser.add_argument("--n-images", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True, help="field i is drawn from (seed, i) alone")
    parser.add_argument("--size", type=int, default=REFERENCE_SIZE_PX, help="side of each square field in px")
    parser.add_argument("--bit-depth", type=int, choices=(8, 16), default=8)


def run(args: argparse.Namespace) -> int:
    if args.n_images < 1:
        raise SystemExit("--n-images must be at least 1.")
    if args.size < 128 or args.size > 4096:
        raise SystemExit(f"--size {args.size} is outside 128..4096 px; choose a size in that range.")
    start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        print(f"\r{done}/{total} fields", end="", flush=True)

    write_dataset(
        args.out, n_images=args.n_images, seed=args.seed, size_px=args.size, bit_depth=args.bit_depth, progress=progress
    )
    print(f"\nwrote {args.n_images} fields to {args.out} in {time.perf_counter() - start:.1f} s")
    print("classes:", ", ".join(f"{i} {name}" for i, name in enumerate(CLASS_NAMES)))
    return 0
