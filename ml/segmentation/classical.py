"""Classical nucleus and cell segmentation: thresholds, distance transforms, seeded watersheds.

Needs no weights. It works at a reduced scale (longest side near 512 px, the HPA segmenter's
0.25 on 2048 px fields; with a nucleus diameter given, the scale that makes nuclei about 25 px
across) and returns labels at full resolution. Dim channels are first stretched over their own
range (`ml.io.normalise_range`), so the bit depth of the file does not matter. Sizes are measured against the
typical nucleus of the field rather than fixed in pixels, so one set of defaults fits small
test images and 3072 px fields alike.

Nuclei: smoothed blue above Li's threshold; touching nuclei are split by a watershed of the
distance transform wherever the neck between two centres is narrow relative to the nuclei; each
outline is then moved to half its own nucleus's brightness above the background.
Cells: a watershed from the nuclei over the log intensity of the cytoplasm reference (red and
yellow) divides the field into territories; each cell is the part of its territory brighter than
a point between the background and its own perinuclear level. When red and yellow are absent,
blank or do not outline most cells, the protein channel is tried; when it does not outline them
either (no signal, or a protein confined to nuclei or organelles), every nucleus is grown by a
fixed distance.
"""

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_li, threshold_otsu
from skimage.measure import label
from skimage.morphology import reconstruction
from skimage.segmentation import expand_labels, relabel_sequential, watershed

from ml.io import FieldImages, normalise_range
from ml.segmentation.base import Segmentation

WORKING_SIDE_PX = 512
# A nucleus of a 2048 px HPA field at working scale (512 px): where a given nucleus diameter puts it.
WORKING_NUCLEUS_DIAMETER_PX = 25.0
CYTOPLASM_CHANNELS: tuple[str, ...] = ("red", "yellow")  # the HPA cell model's references

# A channel whose smoothed values span less than one 8-bit grey level carries no signal.
MIN_SIGNAL_RANGE = 1 / 255
NUCLEUS_SMOOTHING_PX = 1.0  # at working scale
# Smallest nucleus at working scale (7 px across): keeps noise specks from setting the scale.
MIN_NUCLEUS_AREA_PX = 40

# Sizes below are in units of the field's typical nucleus radius (from the median area).
# Touching nuclei split where the neck is under 1/SPLIT_WIDTH_RATIO of the narrower nucleus's
# width, both measured on the distance transform plus an offset that keeps small bumps of an
# outline from splitting off.
SPLIT_WIDTH_RATIO = 1.5
SPLIT_OFFSET_RADII = 0.1
OUTLINE_SEARCH_RADII = 0.15  # how far a refined outline may move beyond the thresholded mask
MIN_NUCLEUS_AREA_FRACTION = 0.04  # of the median nucleus area: keeps micronuclei, drops debris
CYTOPLASM_SMOOTHING_RADII = 0.08
LOG_FLOOR = 0.01  # of the cytoplasm reference's robust maximum; tames the log in the background
PERINUCLEAR_RING_RADII = 0.5  # where a cell's own cytoplasm level is measured
CELL_EDGE_FRACTION = 0.4  # of the way from the background to a cell's level, in log intensity
MAX_CELL_REACH_RADII = 5.0  # no cell extends further than this from its nucleus
MIN_CYTOPLASM_AREA_RATIO = 1.5  # cytoplasm around a nucleus, relative to its area, that outlines a cell
MIN_OUTLINED_FRACTION = 0.5  # of the cells, for the cytoplasm reference to be used at all
FALLBACK_EXPANSION_RADII = 1.0  # growth of a nucleus into a cell when the reference is not used
MIN_CELL_AREA_FRACTION = 0.15  # of the median nucleus area


class ClassicalBackend:
    """Segments a field with image processing only; stateless, so one instance serves all fields.

    `channels_used` of the result names the nucleus channel first, then the channels that shaped
    the cells: ("blue", "red", "yellow"), ("blue", "green"), or ("blue",) for grown nuclei.
    """

    def __init__(self, *, working_side_px: int = WORKING_SIDE_PX) -> None:
        if working_side_px < 64:
            raise ValueError(f"working_side_px={working_side_px} is too small to resolve cells; use 64 or more.")
        self.working_side_px = working_side_px

    def segment(self, field: FieldImages) -> Segmentation:
        shape = field.shape
        field = normalise_range(field)  # dim channels over their own range; others exactly as read
        factor = self._factor(field)
        nuclei = _segment_nuclei(_downsample(field.blue, factor))
        radius = _typical_radius(nuclei)
        cells, reference_channels = None, ()
        if radius > 0.0:
            cells, reference_channels = _cells_from_references(field, nuclei, radius, factor)
        if cells is None:
            cells = expand_labels(nuclei, FALLBACK_EXPANSION_RADII * radius)
        nuclei, cells = _finalise(nuclei, cells, radius)
        return Segmentation(
            nuclei_labels=_upsample(nuclei, factor, shape),
            cell_labels=_upsample(cells, factor, shape),
            backend="classical",
            channels_used=("blue", *reference_channels),
        )

    def segment_batch(self, fields: Sequence[FieldImages]) -> list[Segmentation]:
        return [self.segment(field) for field in fields]

    def _factor(self, field: FieldImages) -> int:
        """The downsampling to working scale: from the field's nucleus diameter when given (to about
        WORKING_NUCLEUS_DIAMETER_PX), else from its size (longest side near `working_side_px`)."""
        if field.nucleus_diameter_px is not None:
            return max(1, round(field.nucleus_diameter_px / WORKING_NUCLEUS_DIAMETER_PX))
        return max(1, round(max(field.shape) / self.working_side_px))


def _cells_from_references(
    field: FieldImages, nuclei: np.ndarray, radius: float, factor: int
) -> tuple[np.ndarray | None, tuple[str, ...]]:
    """Cells grown over the microtubule and ER references, else over the protein when those are
    absent, blank or do not outline the cells; (None, ()) when no channel outlines them."""
    smoothing_px = max(1.0, CYTOPLASM_SMOOTHING_RADII * radius)
    for candidates in (CYTOPLASM_CHANNELS, ("green",)):
        smoothed = {
            name: ndi.gaussian_filter(_downsample(getattr(field, name), factor), smoothing_px)
            for name in candidates
            if getattr(field, name) is not None
        }
        used = tuple(name for name, channel in smoothed.items() if _has_signal(channel))
        if used:
            cells = _grow_cells(nuclei, np.mean([_scale(smoothed[name]) for name in used], axis=0), radius)
            if cells is not None:
                return cells, used
    return None, ()


def _downsample(image: np.ndarray, factor: int) -> np.ndarray:
    """Mean over factor x factor blocks (edge-padded to whole blocks); float32."""
    if factor == 1:
        return image.astype(np.float32, copy=False)
    height, width = image.shape
    if height % factor or width % factor:
        image = np.pad(image, ((0, -height % factor), (0, -width % factor)), mode="edge")
    # Summing the factor**2 strided sub-grids is several times faster than a 4-D mean.
    total = np.zeros((image.shape[0] // factor, image.shape[1] // factor), dtype=np.float32)
    for row in range(factor):
        for col in range(factor):
            total += image[row::factor, col::factor]
    return total / factor**2


def _upsample(labels: np.ndarray, factor: int, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour back to `shape`, uint16."""
    labels = labels.astype(np.uint16)
    if factor > 1:
        labels = np.repeat(np.repeat(labels, factor, axis=0), factor, axis=1)
    return np.ascontiguousarray(labels[: shape[0], : shape[1]])


def _has_signal(smoothed: np.ndarray) -> bool:
    return bool(smoothed.max() - smoothed.min() >= MIN_SIGNAL_RANGE)


def _typical_radius(labels: np.ndarray) -> float:
    """Radius of the disk with the median object area; 0.0 when there is no object."""
    areas = np.bincount(labels.ravel())[1:]
    areas = areas[areas > 0]
    return float(np.sqrt(np.median(areas) / np.pi)) if len(areas) else 0.0


def _label(mask: np.ndarray) -> np.ndarray:
    """8-connected components."""
    return ndi.label(mask, structure=np.ones((3, 3)))[0]


def _label_means(values: np.ndarray, labels: np.ndarray, *, count: int, default: float) -> np.ndarray:
    """Mean of `values` per label id 0..count (index = id); `default` for ids without pixels."""
    sums = np.bincount(labels.ravel(), weights=values.ravel(), minlength=count + 1)
    pixels = np.bincount(labels.ravel(), minlength=count + 1)
    return np.where(pixels > 0, sums / np.maximum(pixels, 1), default)


def _segment_nuclei(blue: np.ndarray) -> np.ndarray:
    """Nucleus labels (int32, ids not necessarily consecutive) at working scale."""
    smoothed = ndi.gaussian_filter(blue, NUCLEUS_SMOOTHING_PX)
    if not _has_signal(smoothed):
        return np.zeros(blue.shape, dtype=np.int32)
    components = _label(smoothed > threshold_li(smoothed))
    areas = np.bincount(components.ravel())
    areas[0] = 0
    large = areas >= MIN_NUCLEUS_AREA_PX
    if not large.any():
        return np.zeros(blue.shape, dtype=np.int32)
    radius = float(np.sqrt(np.median(areas[large]) / np.pi))
    mask = ndi.binary_fill_holes(large[components])
    nuclei = _split_touching(mask, offset_px=max(1.0, SPLIT_OFFSET_RADII * radius))
    nuclei = _refine_outlines(nuclei, smoothed, foreground=mask, search_px=max(1.0, OUTLINE_SEARCH_RADII * radius))
    areas = np.bincount(nuclei.ravel())
    min_area = max(MIN_NUCLEUS_AREA_PX, MIN_NUCLEUS_AREA_FRACTION * np.pi * _typical_radius(nuclei) ** 2)
    keep = areas >= min_area
    keep[0] = False
    return np.where(keep[nuclei], nuclei, 0)


def _split_touching(mask: np.ndarray, *, offset_px: float) -> np.ndarray:
    """Watershed of the distance transform with one seed per significant maximum.

    A maximum is significant when it is SPLIT_WIDTH_RATIO times higher than the saddle towards
    any higher maximum (after adding `offset_px`). Comparing ratios rather than differences
    judges a small nucleus against a large neighbour by its own size.
    """
    distance = ndi.distance_transform_edt(mask)
    log_distance = np.log(distance + offset_px)
    depth = np.log(SPLIT_WIDTH_RATIO)
    # h-dome transform: the dome over a maximum reaches `depth` only if it is significant.
    # Computed per object on its bounding box, as reconstruction sorts every pixel it is given.
    dome = np.zeros_like(log_distance)
    components = _label(mask)
    for index, box in enumerate(ndi.find_objects(components), start=1):
        box = tuple(slice(max(side.start - 1, 0), side.stop + 1) for side in box)
        inside = components[box] == index
        crop = log_distance[box]
        dome[box][inside] = (crop - reconstruction(crop - depth, crop))[inside]
    # Whole domes, not top pixels, become seeds: the pixel grid can break the crest of one
    # nucleus into several equal tops that do not touch.
    domes = _label((dome > 0) & mask)
    significant = np.bincount(domes[dome >= depth * (1 - 1e-6)], minlength=domes.max() + 1) > 0
    significant[0] = False
    seeds = np.where(significant[domes], domes, 0)
    return watershed(-distance, seeds, mask=mask).astype(np.int32)


def _refine_outlines(
    nuclei: np.ndarray, smoothed: np.ndarray, *, foreground: np.ndarray, search_px: float
) -> np.ndarray:
    """Move each outline to half its nucleus's mean brightness above the background level.

    One global threshold cuts bright nuclei too wide and dim ones too tight.
    """
    count = int(nuclei.max())
    background_level = float(np.median(smoothed[~foreground])) if not foreground.all() else 0.0
    levels = _label_means(smoothed, nuclei, count=count, default=background_level)
    cut = background_level + 0.5 * (levels - background_level)
    cut[0] = np.inf
    candidates = expand_labels(nuclei, search_px)
    refined = np.where(smoothed >= cut[candidates], candidates, 0)
    # Dark nucleoli leave holes; hole pixels take the id of the nearest nucleus pixel.
    filled = ndi.binary_fill_holes(refined > 0)
    _, (rows, cols) = ndi.distance_transform_edt(refined == 0, return_indices=True)
    return np.where(filled, refined[rows, cols], 0).astype(np.int32)


def _scale(smoothed: np.ndarray) -> np.ndarray:
    """Dark level (1st percentile: camera offset, background) to 0, robust maximum to 1."""
    shifted = np.maximum(smoothed - np.percentile(smoothed, 1), 0.0)
    return shifted / max(float(np.percentile(shifted, 99.9)), MIN_SIGNAL_RANGE)


def _grow_cells(nuclei: np.ndarray, reference: np.ndarray, radius: float) -> np.ndarray | None:
    """Cell labels (ids of their nuclei) grown over the cytoplasm reference; None when the
    reference outlines fewer than MIN_OUTLINED_FRACTION of the cells."""
    # Log intensity: a dim cell next to a bright one still forms its own basin and edge.
    log_intensity = np.log(reference + LOG_FLOOR)
    nucleus_distance = ndi.distance_transform_edt(nuclei == 0)
    territories = watershed(-log_intensity, nuclei, mask=nucleus_distance <= MAX_CELL_REACH_RADII * radius)
    count = int(nuclei.max())
    background_level = float(np.median(log_intensity[log_intensity <= threshold_otsu(log_intensity)]))
    ring = (nucleus_distance > 0) & (nucleus_distance <= PERINUCLEAR_RING_RADII * radius)
    levels = _label_means(log_intensity, np.where(ring, territories, 0), count=count, default=background_level)
    cut = background_level + CELL_EDGE_FRACTION * (levels - background_level)
    cut[0] = np.inf
    cells = np.where((log_intensity >= cut[territories]) | (nuclei > 0), territories, 0)
    # Keep only the parts of each cell connected to its nucleus.
    pieces = label(cells, connectivity=1)
    attached = np.bincount(pieces[nuclei > 0], minlength=pieces.max() + 1) > 0
    attached[0] = False
    cells = np.where(attached[pieces], cells, 0)

    # A protein confined to the nucleus or to one organelle does not outline its cell. If that
    # holds for most cells the reference is dropped; the few other such cells are grown by a
    # fixed distance within their territory.
    nucleus_areas = np.bincount(nuclei.ravel(), minlength=count + 1)
    present = nucleus_areas > 0
    present[0] = False
    cytoplasm_areas = np.bincount(cells.ravel(), minlength=count + 1) - nucleus_areas
    outlined = cytoplasm_areas >= MIN_CYTOPLASM_AREA_RATIO * nucleus_areas
    if np.count_nonzero(outlined & present) < MIN_OUTLINED_FRACTION * np.count_nonzero(present):
        return None
    grown = np.where(nucleus_distance <= FALLBACK_EXPANSION_RADII * radius, territories, 0)
    cells = np.where(outlined[territories], cells, grown)
    return np.where(ndi.binary_fill_holes(cells > 0), territories, 0)


def _finalise(nuclei: np.ndarray, cells: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Drop tiny cells with their nuclei, number cells 1..N, give each nucleus its cell's id."""
    areas = np.bincount(cells.ravel())
    keep = areas >= MIN_CELL_AREA_FRACTION * np.pi * radius**2
    keep[0] = False
    cells, _, _ = relabel_sequential(np.where(keep[cells], cells, 0))
    # Cells grow from their nuclei, so every nucleus pixel lies in the cell of the same id.
    nuclei = np.where(nuclei > 0, cells, 0)
    return nuclei, cells
