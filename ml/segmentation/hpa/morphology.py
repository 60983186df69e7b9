"""The HPA post-processing's pixel operations: thresholds, size filters, holes, closing.

Most replace a scikit-image or SciPy call of the reference and give exactly its result (the
tests compare them), in less time: thresholds come from one pass over the 256 uint8 values, size filters,
hole filling and labelling from one labelling pass and a `bincount` each, and the closing with
disk(6) is a max/min of shifted views, one horizontal window per row offset. Functions with a
`block_px` argument take images on the block grid (see `ml.segmentation.hpa.postprocess`) and
count each grid pixel as `block_px**2` pixels of the field.
"""

from collections.abc import Callable

import numpy as np
from scipy import ndimage as ndi
from skimage import filters

CROSS = ndi.generate_binary_structure(2, 1)  # 4-connectivity


SQUARE = ndi.generate_binary_structure(2, 2)  # 8-connectivity


def smallest_uint8_where(predicate: Callable[[int], bool]) -> int:
    """Smallest uint8 value for which `predicate` (monotone) holds; 256 if none."""
    return next((value for value in range(256) if predicate(value)), 256)


def otsu_of_uint8(image: np.ndarray) -> float:
    """threshold_otsu(image / 255) from a 256-bin count instead of a float copy of the image."""
    counts = np.bincount(image.ravel(), minlength=256)
    present = np.flatnonzero(counts)
    if len(present) == 1:
        return present[0] / 255
    values = present / 255
    # np.histogram over the distinct values, weighted by their counts, bins exactly like
    # skimage's histogram of the whole float image (same range, same edges).
    hist, edges = np.histogram(values, bins=256, range=(values[0], values[-1]), weights=counts[present])
    centers = (edges[:-1] + edges[1:]) / 2
    return float(filters.threshold_otsu(hist=(hist.astype(np.int64), centers)))


def erode_cross(mask: np.ndarray) -> np.ndarray:
    """Binary erosion by the 3 x 3 cross; outside the image counts as foreground."""
    eroded = mask.copy()
    eroded[1:] &= mask[:-1]
    eroded[:-1] &= mask[1:]
    eroded[:, 1:] &= mask[:, :-1]
    eroded[:, :-1] &= mask[:, 1:]
    return eroded


def dilate_cross(mask: np.ndarray) -> np.ndarray:
    dilated = mask.copy()
    dilated[1:] |= mask[:-1]
    dilated[:-1] |= mask[1:]
    dilated[:, 1:] |= mask[:, :-1]
    dilated[:, :-1] |= mask[:, 1:]
    return dilated


def remove_small_objects(mask: np.ndarray, min_area_px: int, *, block_px: int, structure: np.ndarray) -> np.ndarray:
    """Drop connected components smaller than `min_area_px` full-resolution pixels."""
    components, _ = ndi.label(mask, structure=structure, output=np.int32)
    keep = np.bincount(components.ravel()) * block_px**2 >= min_area_px
    keep[0] = False
    return keep[components]


def fill_small_holes(mask: np.ndarray, max_area_px: int, *, block_px: int) -> np.ndarray:
    """Fill 4-connected background regions under `max_area_px`, those touching the edge included."""
    background, _ = ndi.label(~mask, structure=CROSS, output=np.int32)
    small = np.bincount(background.ravel()) * block_px**2 < max_area_px
    small[0] = False
    return mask | small[background]


def label_areas(labels: np.ndarray, label_count: int) -> np.ndarray:
    """np.bincount(labels.ravel(), minlength=label_count + 1) for labels 0..label_count.

    Under 256 labels, the labels are counted two at a time, as the bytes of uint16 words:
    half as many values to count as a plain bincount.
    """
    if label_count >= 256 or labels.size % 2:
        return np.bincount(labels.ravel(), minlength=label_count + 1)
    words = labels.astype(np.uint8, order="C").reshape(-1).view(np.uint16)
    pairs = np.bincount(words, minlength=1 << 16).reshape(256, 256)
    return (pairs.sum(axis=0) + pairs.sum(axis=1))[: label_count + 1]


def remove_small_labels(labels: np.ndarray, min_area_px: int) -> np.ndarray:
    keep = label_areas(labels, int(labels.max(initial=0))) >= min_area_px
    keep[0] = True
    if keep.all():
        return labels
    return (np.arange(len(keep), dtype=np.int32) * keep)[labels]


def relabel_in_raster_order(labels: np.ndarray, *, min_area_px: int = 0) -> np.ndarray:
    """Drop labels under `min_area_px` pixels and renumber the rest 1..N by their first pixel in
    raster order (skimage.measure.label's order), with a single relabelling pass.

    Labels that touch only diagonally stay apart, which a binary relabelling would merge.
    """
    boxes = ndi.find_objects(labels)
    first_pixels, present = [], []
    for label, box in enumerate(boxes, start=1):
        # Areas counted within each label's box: far fewer pixels than a bincount of the field.
        if box is None or np.count_nonzero(labels[box] == label) < min_area_px:
            continue
        top_row = labels[box[0].start, box[1]]
        first_pixels.append(box[0].start * labels.shape[1] + box[1].start + int(np.argmax(top_row == label)))
        present.append(label)
    new_ids = np.zeros(len(boxes) + 1, dtype=np.int32)
    new_ids[np.asarray(present, dtype=np.intp)[np.argsort(first_pixels)]] = np.arange(1, len(present) + 1)
    if np.array_equal(new_ids, np.arange(len(new_ids))):
        return labels.astype(np.int32, copy=False)
    return new_ids[labels]


def label_large_components(mask: np.ndarray, min_area_px: int) -> np.ndarray:
    """8-connected components of at least `min_area_px`, numbered 1..N in raster order."""
    components, count = ndi.label(mask, structure=SQUARE, output=np.int32)
    keep = label_areas(components, count) >= min_area_px
    keep[0] = False
    if keep[1:].all():
        return components
    new_ids = (np.cumsum(keep) * keep).astype(np.int32)
    return new_ids[components]


def _shift_reduce(image: np.ndarray, radius_px: int, axis: int, reduce: np.ufunc) -> np.ndarray:
    """max/min over a window of +-radius_px along one axis, ignoring pixels outside the image."""
    out = image.copy()
    reached = 0
    while reached < radius_px:
        step = min(reached + 1, radius_px - reached)  # doubling: 1, 2, 4, ... pixels per pass
        previous = out.copy()
        head = [slice(None)] * 2
        tail = [slice(None)] * 2
        head[axis], tail[axis] = slice(step, None), slice(None, -step)
        reduce(out[tuple(head)], previous[tuple(tail)], out=out[tuple(head)])
        reduce(out[tuple(tail)], previous[tuple(head)], out=out[tuple(tail)])
        reached += step
    return out


def _disk_half_widths(radius_px: int) -> list[int]:
    """Half-width of skimage's disk(radius_px) on each row offset 0..radius_px."""
    return [int(np.floor(np.sqrt(radius_px**2 - dy**2))) for dy in range(radius_px + 1)]


def _disk_filter(image: np.ndarray, radius_px: int, reduce: np.ufunc) -> np.ndarray:
    """max/min over disk(radius_px): each row offset takes a horizontal window of its half-width.

    The horizontal windows grow one from the other (a window of +-a then +-b is one of
    +-(a + b)), and each row offset adds one shifted copy of its window, from both sides.
    """
    half_widths = _disk_half_widths(radius_px)
    horizontal = {}
    previous_width, previous = 0, image
    for width in sorted(set(half_widths)):
        previous = _shift_reduce(previous, width - previous_width, 1, reduce) if width > previous_width else previous
        horizontal[width], previous_width = previous, width
    result = horizontal[half_widths[0]].copy()
    for dy in range(1, min(radius_px + 1, image.shape[0])):
        window = horizontal[half_widths[dy]]
        reduce(result[dy:], window[:-dy], out=result[dy:])
        reduce(result[:-dy], window[dy:], out=result[:-dy])
    return result


def closing_disk(labels: np.ndarray, radius_px: int) -> np.ndarray:
    """Grey closing of a label image by disk(radius_px), as skimage.morphology.closing; uint8
    when the labels fit, else int32.

    skimage's default 'reflect' border equals ignoring pixels outside the image here: a
    reflected pixel is never farther from the centre than the pixel it copies.
    """
    narrow = labels.astype(np.uint8 if labels.max(initial=0) < 256 else np.int32)
    return _disk_filter(_disk_filter(narrow, radius_px, np.maximum), radius_px, np.minimum)


def split_and_fill_holes(labels: np.ndarray, *, labelled: bool = True) -> np.ndarray:
    """The reference's __fill_holes: drop every pixel on a label boundary (skimage's 'thick'
    find_boundaries), fill holes, and renumber the 4-connected pieces (or, with
    `labelled=False`, return the filled mask)."""
    on_boundary = np.zeros(labels.shape, dtype=bool)
    vertical = labels[1:] != labels[:-1]
    on_boundary[1:] |= vertical
    on_boundary[:-1] |= vertical
    horizontal = labels[:, 1:] != labels[:, :-1]
    on_boundary[:, 1:] |= horizontal
    on_boundary[:, :-1] |= horizontal
    background = (labels == 0) | on_boundary
    # binary_fill_holes: background not 4-connected to the image edge becomes foreground.
    regions, region_count = ndi.label(background, structure=CROSS, output=np.int32)
    outside = np.zeros(region_count + 1, dtype=bool)
    for edge in (regions[0], regions[-1], regions[:, 0], regions[:, -1]):
        outside[edge] = True
    outside[0] = False
    # Usually every background region reaches the edge and nothing is filled.
    filled = ~background if outside[1:].all() else ~outside[regions]
    if not labelled:
        return filled
    pieces, _ = ndi.label(filled, structure=CROSS, output=np.int32)
    return pieces
