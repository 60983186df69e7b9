"""HPA-Cell-Segmentation's `label_nuclei` and `label_cell`, re-implemented for speed.

The reference (hpacellseg.utils at CellProfiling/HPA-Cell-Segmentation@7b6dbc6) turns the
uint8 softmax maps of its two U-Nets ([unused, touching border, foreground] x (H, W)) into label
images with thresholds, seeded watersheds and size filters. These functions give the same
objects with scikit-image >= 0.25 (whose watershed they reproduce) in a ninth to an eighth of
the time on a 2048 px field (`bench/bench_postprocess.py`):

- thresholds are the reference's float comparisons evaluated once for every uint8 value;
- size filters, hole filling and labelling use one labelling pass and a `bincount` each;
- the closing with disk(6) is a max/min of shifted views: one horizontal window per row offset;
- predictions restored from the network's quarter-scale output are constant on 4 x 4 blocks,
  so block-exact steps run on the 16x smaller block grid, and the cell-body watershed, whose
  full-resolution result differs from the block grid's only where two floods meet on a plateau,
  runs there too (`_BLOCK_PX`);
- the watershed that extends cells into their borders queues only the labelled pixels next to
  unlabelled ones (`_flood`);
- every watershed runs one flooding loop on padded arrays built once: `_flood.c`, compiled by
  `make venv`, visits the pixels in exactly scikit-image's order from a compact heap, and
  scikit-image's own loop is the fallback (`_flood_padded`).

Reference quirks that change the output are kept on purpose and marked "Reference quirk".
The one not kept: the reference casts cell labels to uint8 mid-way, so fields with more than
255 cells wrapped; labels here are int32 throughout.
"""

import ctypes
import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage import filters, segmentation

# The reference network sees the field at scale 0.25 and its output is upscaled x4 by pixel
# replication, so restored predictions are constant on blocks of this side.
_BLOCK_PX = 4

_CROSS = ndi.generate_binary_structure(2, 1)  # 4-connectivity
_SQUARE = ndi.generate_binary_structure(2, 2)  # 8-connectivity

# Sizes in pixels at full resolution (hpacellseg/utils.py).
_HOLE_AREA_PX = 1000
_NUCLEUS_MIN_AREA_PX = 2500
_NUCLEUS_SEED_MIN_AREA_PX = 500
_NUCLEUS_MASK_MIN_AREA_PX = 8
_CELL_MIN_AREA_PX = 5500
_CLOSING_RADIUS_PX = 6


def _smallest_uint8_where(predicate: Callable[[int], bool]) -> int:
    """Smallest uint8 value for which `predicate` (monotone) holds; 256 if none."""
    return next((value for value in range(256) if predicate(value)), 256)


# The reference compares float images (uint8 / 255) with float thresholds; evaluating the very
# same expressions on every uint8 value gives integer thresholds with identical results.
_NUCLEUS_SEED_MIN = _smallest_uint8_where(lambda v: v / 255.0 > 0.4 + -0.25)
_NUCLEUS_MASK_MIN = _smallest_uint8_where(lambda v: v / 255.0 > 0.4)
_CELL_BORDER_MIN = _smallest_uint8_where(lambda v: v / 255 > 0.05)
_BORDER_SUM_MAX = _smallest_uint8_where(lambda s: not 1 - s / 255.0 > 0.05) - 1


def label_nuclei(nuclei_pred: np.ndarray) -> np.ndarray:
    """Label nuclei from the nuclei model's (H, W, 3) uint8 prediction; int32 (H, W), 0 = background."""
    _check_prediction(nuclei_pred, name="nuclei_pred")
    block = _block_px(nuclei_pred)
    border, body = _grid_channel(nuclei_pred, 1, block), _grid_channel(nuclei_pred, 2, block)
    # Reference quirk: the uint8 maps are compared with 0.05, 0.15 and 0.4 as they are, so
    # "above threshold" means "not zero".
    seeds = (border == 0) & (body > 0)
    mask = _fill_small_holes(body > 0, _HOLE_AREA_PX, block_px=block)
    if block == 1:
        markers, eroded = ndi.label(_erode_cross(seeds), structure=_SQUARE, output=np.int32)[0], False
    else:
        # The grid's 4-connected seeds, eroded once upsampled: see `_watershed_with_lines`.
        markers, eroded = ndi.label(seeds, structure=_CROSS, output=np.int32)[0], True
    nuclei = _watershed_with_lines(mask, markers, block_px=block, erode_markers=eroded)
    return _relabel_in_raster_order(nuclei, min_area_px=_NUCLEUS_MIN_AREA_PX)


def label_cell(nuclei_pred: np.ndarray, cell_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label nuclei and cells from both models' (H, W, 3) uint8 predictions.

    Returns `(nuclei_labels, cell_labels)`, int32 (H, W); a nucleus carries the id of the cell
    that contains it, and a cell may hold no nucleus or several pieces of one.
    """
    _check_prediction(nuclei_pred, name="nuclei_pred")
    _check_prediction(cell_pred, name="cell_pred")
    if nuclei_pred.shape != cell_pred.shape:
        raise ValueError(
            f"nuclei_pred has shape {nuclei_pred.shape} but cell_pred has {cell_pred.shape}; "
            "pass the two predictions of the same field."
        )
    block = min(_block_px(nuclei_pred), _block_px(cell_pred))
    nuclei_border, nuclei_body = _grid_channel(nuclei_pred, 1, block), _grid_channel(nuclei_pred, 2, block)
    cell_border, cell_body = _grid_channel(cell_pred, 1, block), _grid_channel(cell_pred, 2, block)

    # Reference quirk: the two border maps are added in uint8 and wrap around past 255.
    border_sum = nuclei_border + cell_border
    seeds = (nuclei_body >= _NUCLEUS_SEED_MIN) & (border_sum <= _BORDER_SUM_MAX)
    seeds = _remove_small_objects(seeds, _NUCLEUS_SEED_MIN_AREA_PX, block_px=block, structure=_CROSS)
    nuclei_mask = _fill_small_holes(nuclei_body >= _NUCLEUS_MASK_MIN, _HOLE_AREA_PX, block_px=block)
    nuclei_mask = _remove_small_objects(nuclei_mask, _NUCLEUS_MASK_MIN_AREA_PX, block_px=block, structure=_CROSS)
    markers, _ = ndi.label(seeds, structure=_CROSS, output=np.int32)
    nuclei = _watershed_with_lines(nuclei_mask, markers, block_px=block)
    nuclei = _relabel_in_raster_order(nuclei, min_area_px=_NUCLEUS_MIN_AREA_PX)

    # A block-constant image holds each value of its block grid block**2 times, a power of two,
    # so every sum in Otsu's method scales exactly and the grid gives the same threshold.
    threshold = max(0.22, _otsu_of_uint8(cell_body) * 0.5)
    cell_mask = cell_body >= _smallest_uint8_where(lambda v: v / 255 > threshold)
    # Reference quirk: the step meant to exclude the border ("green") area multiplies by
    # np.invert of an int8 0/1 array, which is never zero, so no border is excluded; and the
    # np.clip meant to floor the landscape at the threshold has a_min > a_max where it would
    # act, which returns the image unchanged. The landscape is the cell body map itself.
    landscape = 255 - cell_body  # on the block grid
    cells = _flood_cell_bodies(landscape, nuclei, cell_mask, block_px=block)
    cells = _remove_small_labels(cells, _CELL_MIN_AREA_PX)
    cells = _closing_disk(cells, _CLOSING_RADIUS_PX)
    cells = _split_and_fill_holes(cells)
    # Extend the cells into the predicted borders between them.
    border_mask = _upsample(cell_border >= _CELL_BORDER_MIN, block)
    cells = _flood(_upsample(landscape, block), cells, (cells > 0) | border_mask)
    # The reference fills holes and labels 4-connected pieces, then relabels the pieces'
    # mask 8-connected: labelling the filled mask 8-connected at once gives the same.
    cells = _label_large_components(_split_and_fill_holes(cells, labelled=False), _CELL_MIN_AREA_PX)

    nuclei_pieces, piece_count = ndi.label((cells > 0) & (nuclei > 0), structure=_SQUARE, output=np.int32)
    large = _label_areas(nuclei_pieces, piece_count) >= _NUCLEUS_MIN_AREA_PX
    large[0] = False
    return np.where(large[nuclei_pieces], cells, 0), cells


def _check_prediction(prediction: np.ndarray, *, name: str) -> None:
    if prediction.ndim != 3 or prediction.shape[2] != 3 or prediction.dtype != np.uint8:
        raise ValueError(
            f"{name} must be a uint8 array of shape (H, W, 3) (unused, border, foreground); "
            f"got {prediction.dtype} {prediction.shape}."
        )


def _block_px(prediction: np.ndarray) -> int:
    """`_BLOCK_PX` when the (H, W, 3) prediction is constant on blocks of that side, else 1.

    All three channels are compared at once, as bytes: a block row is constant when its four
    pixels (twelve bytes) repeat the first three, and a block when its four rows are equal.
    """
    height, width, _ = prediction.shape
    if height % _BLOCK_PX or width % _BLOCK_PX:
        return 1
    rows = np.ascontiguousarray(prediction).reshape(height // _BLOCK_PX, _BLOCK_PX, width * 3)
    first_rows = rows[:, 0]
    if not np.array_equal(rows[:, 1:], np.broadcast_to(first_rows[:, None], (len(rows), _BLOCK_PX - 1, width * 3))):
        return 1
    pixels = first_rows.reshape(len(rows), width // _BLOCK_PX, _BLOCK_PX * 3)
    return _BLOCK_PX if np.array_equal(pixels[..., 3:], pixels[..., :-3]) else 1


def _grid_channel(prediction: np.ndarray, channel: int, block_px: int) -> np.ndarray:
    """One channel on the block grid (every `block_px`-th pixel), contiguous."""
    return np.ascontiguousarray(prediction[::block_px, ::block_px, channel])


def _erode_cross(mask: np.ndarray) -> np.ndarray:
    """Binary erosion by the 3 x 3 cross; outside the image counts as foreground."""
    eroded = mask.copy()
    eroded[1:] &= mask[:-1]
    eroded[:-1] &= mask[1:]
    eroded[:, 1:] &= mask[:, :-1]
    eroded[:, :-1] &= mask[:, 1:]
    return eroded


def _remove_small_objects(mask: np.ndarray, min_area_px: int, *, block_px: int, structure: np.ndarray) -> np.ndarray:
    """Drop connected components smaller than `min_area_px` full-resolution pixels."""
    components, _ = ndi.label(mask, structure=structure, output=np.int32)
    keep = np.bincount(components.ravel()) * block_px**2 >= min_area_px
    keep[0] = False
    return keep[components]


def _fill_small_holes(mask: np.ndarray, max_area_px: int, *, block_px: int) -> np.ndarray:
    """Fill 4-connected background regions under `max_area_px`, those touching the edge included."""
    background, _ = ndi.label(~mask, structure=_CROSS, output=np.int32)
    small = np.bincount(background.ravel()) * block_px**2 < max_area_px
    small[0] = False
    return mask | small[background]


def _label_areas(labels: np.ndarray, label_count: int) -> np.ndarray:
    """np.bincount(labels.ravel(), minlength=label_count + 1) for labels 0..label_count.

    Under 256 labels, the labels are counted two at a time, as the bytes of uint16 words:
    half as many values to count as a plain bincount.
    """
    if label_count >= 256 or labels.size % 2:
        return np.bincount(labels.ravel(), minlength=label_count + 1)
    words = labels.astype(np.uint8, order="C").reshape(-1).view(np.uint16)
    pairs = np.bincount(words, minlength=1 << 16).reshape(256, 256)
    return (pairs.sum(axis=0) + pairs.sum(axis=1))[: label_count + 1]


def _remove_small_labels(labels: np.ndarray, min_area_px: int) -> np.ndarray:
    keep = _label_areas(labels, int(labels.max(initial=0))) >= min_area_px
    keep[0] = True
    if keep.all():
        return labels
    return (np.arange(len(keep), dtype=np.int32) * keep)[labels]


def _relabel_in_raster_order(labels: np.ndarray, *, min_area_px: int = 0) -> np.ndarray:
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


def _label_large_components(mask: np.ndarray, min_area_px: int) -> np.ndarray:
    """8-connected components of at least `min_area_px`, numbered 1..N in raster order."""
    components, count = ndi.label(mask, structure=_SQUARE, output=np.int32)
    keep = _label_areas(components, count) >= min_area_px
    keep[0] = False
    if keep[1:].all():
        return components
    new_ids = (np.cumsum(keep) * keep).astype(np.int32)
    return new_ids[components]


def _otsu_of_uint8(image: np.ndarray) -> float:
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


def _closing_disk(labels: np.ndarray, radius_px: int) -> np.ndarray:
    """Grey closing of a label image by disk(radius_px), as skimage.morphology.closing; uint8
    when the labels fit, else int32.

    skimage's default 'reflect' border equals ignoring pixels outside the image here: a
    reflected pixel is never farther from the centre than the pixel it copies.
    """
    narrow = labels.astype(np.uint8 if labels.max(initial=0) < 256 else np.int32)
    return _disk_filter(_disk_filter(narrow, radius_px, np.maximum), radius_px, np.minimum)


def _split_and_fill_holes(labels: np.ndarray, *, labelled: bool = True) -> np.ndarray:
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
    regions, region_count = ndi.label(background, structure=_CROSS, output=np.int32)
    outside = np.zeros(region_count + 1, dtype=bool)
    for edge in (regions[0], regions[-1], regions[:, 0], regions[:, -1]):
        outside[edge] = True
    outside[0] = False
    # Usually every background region reaches the edge and nothing is filled.
    filled = ~background if outside[1:].all() else ~outside[regions]
    if not labelled:
        return filled
    pieces, _ = ndi.label(filled, structure=_CROSS, output=np.int32)
    return pieces


def _watershed_with_lines(mask: np.ndarray, markers: np.ndarray, *, block_px: int, erode_markers: bool = False) -> np.ndarray:
    """The reference's watershed of a binary mask by itself, with watershed lines, int32.

    `mask` and `markers` are on the block grid and are upsampled into the padded arrays of
    the flooding loop; `erode_markers` then keeps only the markers' pixels that survive a
    binary erosion by the 3 x 3 cross. That erosion keeps the middle of every block and the
    pixels between two 4-adjacent blocks, never those between blocks that only touch at a
    corner, so its 8-connected components (the reference's markers) are the grid's
    4-connected components, met in the same raster order.

    Every pixel of the mask has the same height, so the result hinges on scikit-image's queue
    order, and small changes there flip which nuclei touch diagonally later on. It therefore
    floods with every marker in the queue, over the mask's bounding box, which keeps the
    raster order of every pixel and hence the queue order.
    """
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    shape = (mask.shape[0] * block_px, mask.shape[1] * block_px)
    if len(rows) == 0:
        return np.zeros(shape, dtype=np.int32)
    grid_box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    box_mask, box_markers = mask[grid_box], np.where(mask[grid_box], markers[grid_box], 0)
    height, width = box_mask.shape[0] * block_px, box_mask.shape[1] * block_px
    padded_mask = np.zeros((height + 2, width + 2), dtype=np.int8)
    _upsample_into(padded_mask[1:-1, 1:-1], box_mask, block_px)
    output = np.zeros(padded_mask.shape, dtype=np.int32)
    _upsample_into(output[1:-1, 1:-1], box_markers, block_px)
    if erode_markers:
        inner = output[1:-1, 1:-1]
        inner[~_erode_cross(inner > 0)] = 0
    _flood_padded(None, output, padded_mask, watershed_line=True)
    if (height, width) == shape:
        return output[1:-1, 1:-1]
    labels = np.zeros(shape, dtype=np.int32)
    labels[tuple(slice(part.start * block_px, part.stop * block_px) for part in grid_box)] = output[1:-1, 1:-1]
    return labels


def _upsample_into(out: np.ndarray, image: np.ndarray, block_px: int) -> None:
    """Write `image` upsampled by `block_px` (pixel replication) into the 2-D view `out`."""
    wide = np.repeat(image, block_px, axis=1)
    for row in range(block_px):
        out[row::block_px] = wide


def _upsample(image: np.ndarray, block_px: int) -> np.ndarray:
    if block_px == 1:
        return image
    out = np.empty((image.shape[0] * block_px, image.shape[1] * block_px), dtype=image.dtype)
    _upsample_into(out, image, block_px)
    return out


def _watershed(landscape: np.ndarray, markers: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """skimage.segmentation.watershed(landscape, markers, mask=mask) of a uint8 landscape, int32,
    with the same queue and result."""
    padded_mask, output = _padded_mask_and_markers(mask, markers)
    _flood_padded(_padded(landscape), output, padded_mask, watershed_line=False)
    return output[1:-1, 1:-1]


def _flood(landscape: np.ndarray, markers: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """scikit-image's watershed(landscape, markers, mask=mask) of a uint8 landscape, int32,
    queueing only the labelled pixels that border unlabelled ones.

    A marker pixel whose neighbours are all labelled or outside the mask pushes nothing when
    it leaves the queue, so leaving it out changes only the order of equally high seeds in
    scikit-image's queue: a few pixels where two floods meet on a plateau may go the other way.
    The queue is then a small fraction of the pixels.
    """
    padded_mask, output = _padded_mask_and_markers(mask, markers)
    labelled = output != 0
    seeds = labelled & _dilate_cross(padded_mask.view(bool) & ~labelled)
    _flood_padded(_padded(landscape), output, padded_mask, watershed_line=False, seeds=np.flatnonzero(seeds))
    return output[1:-1, 1:-1]


def _padded(image: np.ndarray) -> np.ndarray:
    padded = np.zeros((image.shape[0] + 2, image.shape[1] + 2), dtype=image.dtype)
    padded[1:-1, 1:-1] = image
    return padded


def _padded_mask_and_markers(mask: np.ndarray, markers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The flooding loop's int8 mask and int32 labels (the markers inside the mask), padded."""
    padded_mask = _padded(mask.view(np.int8))
    output = np.zeros(padded_mask.shape, dtype=np.int32)
    np.copyto(output[1:-1, 1:-1], markers, where=mask, casting="unsafe")
    return padded_mask, output


def _flood_padded(
    heights: np.ndarray | None,
    labels: np.ndarray,
    mask: np.ndarray,
    *,
    watershed_line: bool,
    seeds: np.ndarray | None = None,
) -> None:
    """Flood in place, as scikit-image's watershed does, on padded (H + 2, W + 2) arrays whose
    border is outside the int8 `mask`: uint8 `heights` (None: a flat landscape) and int32
    `labels` holding the markers. The queue starts with `seeds` (raveled, ascending; every
    marker by default).

    The loop is the compiled one in `_flood.c` (the same visiting order as scikit-image's, in
    about 0.6 of the time), else scikit-image's own loop run on these arrays, else, should a
    scikit-image version lack that loop, its public function.
    """
    if seeds is None:
        seeds = np.flatnonzero(labels)
    library = _flood_library()
    if library is not None and labels.size < 2**31:
        # Locals keep every array alive while the loop reads it.
        offsets = np.array([-labels.shape[1], -1, 1, labels.shape[1]], dtype=np.int64)
        queued = np.ascontiguousarray(seeds, dtype=np.int64)
        for array, dtype in ((heights, np.uint8), (labels, np.int32), (mask, np.int8)):
            if array is not None and (array.dtype != dtype or not array.flags.c_contiguous or array.shape != labels.shape):
                raise ValueError("The flooding loop takes C-contiguous uint8 heights, int32 labels and int8 mask of one shape.")
        status = library.hpaweb_flood(
            None if heights is None else heights.ctypes.data,
            labels.ctypes.data,
            mask.ctypes.data,
            queued.ctypes.data,
            len(queued),
            offsets.ctypes.data,
            len(offsets),
            watershed_line,
        )
        if status != 0:
            raise MemoryError("Out of memory while flooding a label image.")
        return
    landscape = np.zeros(labels.shape) if heights is None else heights.astype(np.float64)
    try:
        from skimage.morphology._util import _offsets_to_raveled_neighbors
        from skimage.segmentation._watershed_cy import watershed_raveled

        watershed_raveled(
            landscape.ravel(),
            np.ascontiguousarray(seeds, dtype=np.intp),
            _offsets_to_raveled_neighbors(labels.shape, _CROSS, center=(1, 1)),
            mask.ravel(),
            np.array([labels.shape[1], 1], dtype=np.intp),
            0.0,
            labels.ravel(),
            watershed_line,
        )
    except (ImportError, TypeError):  # pragma: no cover - a scikit-image without that loop
        labels[...] = segmentation.watershed(landscape, labels, mask=mask.view(bool), watershed_line=watershed_line)


@functools.cache
def _flood_library() -> ctypes.CDLL | None:
    """The compiled flooding loop (`make venv` builds it next to this file); None if not built."""
    try:
        library = ctypes.CDLL(str(Path(__file__).with_name("_flood.so")))
    except OSError:
        return None
    library.hpaweb_flood.argtypes = [
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_int64,
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_int,
    ]
    library.hpaweb_flood.restype = ctypes.c_int
    return library


def _flood_cell_bodies(landscape: np.ndarray, nuclei: np.ndarray, cell_mask_coarse: np.ndarray, *, block_px: int) -> np.ndarray:
    """The first cell watershed: nuclei flood the cell body mask, lowest landscape first."""
    if block_px == 1:
        return _flood(landscape, nuclei, cell_mask_coarse)
    in_mask = _upsample(cell_mask_coarse, block_px) & (nuclei > 0)
    # A block is a marker when any of its pixels is; ties between two nuclei in a block go to
    # the larger id, a one-block difference that the closing below smooths over.
    block_markers = np.where(cell_mask_coarse, _block_max(nuclei, block_px), 0)
    coarse = _watershed(landscape, block_markers, cell_mask_coarse)
    cells = _upsample(coarse, block_px)  # a new array (block_px > 1)
    np.copyto(cells, nuclei, where=in_mask)
    return cells


def _block_max(image: np.ndarray, block_px: int) -> np.ndarray:
    """Maximum over each block_px x block_px block."""
    columns = image[:, ::block_px].copy()
    for offset in range(1, block_px):
        np.maximum(columns, image[:, offset::block_px], out=columns)
    blocks = columns[::block_px].copy()
    for offset in range(1, block_px):
        np.maximum(blocks, columns[offset::block_px], out=blocks)
    return blocks


def _dilate_cross(mask: np.ndarray) -> np.ndarray:
    dilated = mask.copy()
    dilated[1:] |= mask[:-1]
    dilated[:-1] |= mask[1:]
    dilated[:, 1:] |= mask[:, :-1]
    dilated[:, :-1] |= mask[:, 1:]
    return dilated
