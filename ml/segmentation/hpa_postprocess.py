"""HPA-Cell-Segmentation's `label_nuclei` and `label_cell`, re-implemented for speed.

The reference (hpacellseg.utils at CellProfiling/HPA-Cell-Segmentation@7b6dbc6) turns the
uint8 softmax maps of its two U-Nets ([unused, touching border, foreground] x (H, W)) into label
images with thresholds, seeded watersheds and size filters. These functions give the same
objects with scikit-image >= 0.25 (whose watershed they reproduce) in a fifth to a quarter of the
time on a 2048 px field (`bench/bench_postprocess.py`):

- thresholds are the reference's float comparisons evaluated once for every uint8 value;
- size filters, hole filling and labelling use one labelling pass and a `bincount` each;
- the closing with disk(6) is a max/min of shifted views: one horizontal window per row offset;
- predictions restored from the network's quarter-scale output are constant on 4 x 4 blocks,
  so block-exact steps run on the 16x smaller block grid, and the cell-body watershed, whose
  full-resolution result differs from the block grid's only where two floods meet on a plateau,
  runs there too (`_BLOCK_PX`);
- watersheds flood only what they can change: regions next to a single label are filled
  directly and only regions between two or more labels are flooded by scikit-image;
- scikit-image's flooding loop runs on padded arrays built once, without the copies its public
  wrapper makes, with the same queue and result (`_watershed`).

Reference quirks that change the output are kept on purpose and marked "Reference quirk".
The one not kept: the reference casts cell labels to uint8 mid-way, so fields with more than
255 cells wrapped; labels here are int32 throughout.
"""

from collections.abc import Callable

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
    border, body = _split_prediction(nuclei_pred, name="nuclei_pred")
    block = _block_px(border, body)
    # Reference quirk: the uint8 maps are compared with 0.05, 0.15 and 0.4 as they are, so
    # "above threshold" means "not zero".
    seeds = (border[::block, ::block] == 0) & (body[::block, ::block] > 0)
    markers = _label_eroded_seeds(seeds, block)
    mask = _upsample(_fill_small_holes(body[::block, ::block] > 0, _HOLE_AREA_PX, block_px=block), block)
    nuclei = _watershed_with_lines(mask, markers)
    return _relabel_in_raster_order(nuclei, min_area_px=_NUCLEUS_MIN_AREA_PX)


def label_cell(nuclei_pred: np.ndarray, cell_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label nuclei and cells from both models' (H, W, 3) uint8 predictions.

    Returns `(nuclei_labels, cell_labels)`, int32 (H, W); a nucleus carries the id of the cell
    that contains it, and a cell may hold no nucleus or several pieces of one.
    """
    nuclei_border, nuclei_body = _split_prediction(nuclei_pred, name="nuclei_pred")
    cell_border, cell_body = _split_prediction(cell_pred, name="cell_pred")
    if nuclei_pred.shape != cell_pred.shape:
        raise ValueError(
            f"nuclei_pred has shape {nuclei_pred.shape} but cell_pred has {cell_pred.shape}; "
            "pass the two predictions of the same field."
        )
    block = _block_px(nuclei_border, nuclei_body, cell_border, cell_body)
    coarse = (slice(None, None, block), slice(None, None, block))

    # Reference quirk: the two border maps are added in uint8 and wrap around past 255.
    border_sum = nuclei_border[coarse] + cell_border[coarse]
    seeds = (nuclei_body[coarse] >= _NUCLEUS_SEED_MIN) & (border_sum <= _BORDER_SUM_MAX)
    seeds = _remove_small_objects(seeds, _NUCLEUS_SEED_MIN_AREA_PX, block_px=block, structure=_CROSS)
    nuclei_mask = _fill_small_holes(nuclei_body[coarse] >= _NUCLEUS_MASK_MIN, _HOLE_AREA_PX, block_px=block)
    nuclei_mask = _remove_small_objects(nuclei_mask, _NUCLEUS_MASK_MIN_AREA_PX, block_px=block, structure=_CROSS)
    markers, _ = ndi.label(seeds, structure=_CROSS, output=np.int32)
    nuclei = _watershed_with_lines(_upsample(nuclei_mask, block), _upsample(markers, block))
    nuclei = _relabel_in_raster_order(nuclei, min_area_px=_NUCLEUS_MIN_AREA_PX)

    # A block-constant image holds each value of its block grid block**2 times, a power of two,
    # so every sum in Otsu's method scales exactly and the grid gives the same threshold.
    threshold = max(0.22, _otsu_of_uint8(cell_body[coarse]) * 0.5)
    cell_mask = cell_body[coarse] >= _smallest_uint8_where(lambda v: v / 255 > threshold)
    # Reference quirk: the step meant to exclude the border ("green") area multiplies by
    # np.invert of an int8 0/1 array, which is never zero, so no border is excluded; and the
    # np.clip meant to floor the landscape at the threshold has a_min > a_max where it would
    # act, which returns the image unchanged. The landscape is the cell body map itself.
    landscape = 255 - cell_body
    cells = _flood_cell_bodies(landscape, nuclei, cell_mask, block_px=block)
    cells = _remove_small_labels(cells, _CELL_MIN_AREA_PX)
    cells = _closing_disk(cells, _CLOSING_RADIUS_PX)
    cells = _split_and_fill_holes(cells)
    # Extend the cells into the predicted borders between them.
    cells = _flood(landscape, cells, (cells > 0) | (cell_border >= _CELL_BORDER_MIN), markers_in_mask=True)
    # The reference fills holes and labels 4-connected pieces, then relabels the pieces'
    # mask 8-connected: labelling the filled mask 8-connected at once gives the same.
    cells = _label_large_components(_split_and_fill_holes(cells, labelled=False), _CELL_MIN_AREA_PX)

    nuclei_pieces, piece_count = ndi.label((cells > 0) & (nuclei > 0), structure=_SQUARE, output=np.int32)
    large = _label_areas(nuclei_pieces, piece_count) >= _NUCLEUS_MIN_AREA_PX
    large[0] = False
    return np.where(large[nuclei_pieces], cells, 0), cells


def _split_prediction(prediction: np.ndarray, *, name: str) -> tuple[np.ndarray, np.ndarray]:
    if prediction.ndim != 3 or prediction.shape[2] != 3 or prediction.dtype != np.uint8:
        raise ValueError(
            f"{name} must be a uint8 array of shape (H, W, 3) (unused, border, foreground); "
            f"got {prediction.dtype} {prediction.shape}."
        )
    return np.ascontiguousarray(prediction[..., 1]), np.ascontiguousarray(prediction[..., 2])


def _block_px(*images: np.ndarray) -> int:
    """`_BLOCK_PX` when every (contiguous uint8) image is constant on blocks of that side, else 1."""
    height, width = images[0].shape
    if height % _BLOCK_PX or width % _BLOCK_PX:
        return 1
    for image in images:
        # Four uint8 pixels of a row are one uint32 word: a row is block-constant when each
        # word repeats its first byte, and a block row when its four rows are equal.
        words = image.view(np.uint32).reshape(height // _BLOCK_PX, _BLOCK_PX, width // _BLOCK_PX)
        first_rows = words[:, :1]
        if not (np.array_equal(first_rows, (first_rows & 0xFF) * np.uint32(0x01010101)) and (words == first_rows).all()):
            return 1
    return _BLOCK_PX


def _upsample(image: np.ndarray, block_px: int) -> np.ndarray:
    if block_px == 1:
        return image
    height, width = image.shape
    blocks = np.broadcast_to(image[:, None, :, None], (height, block_px, width, block_px))
    return blocks.reshape(height * block_px, width * block_px)


def _erode_cross(mask: np.ndarray) -> np.ndarray:
    """Binary erosion by the 3 x 3 cross; outside the image counts as foreground."""
    eroded = mask.copy()
    eroded[1:] &= mask[:-1]
    eroded[:-1] &= mask[1:]
    eroded[:, 1:] &= mask[:, :-1]
    eroded[:, :-1] &= mask[:, 1:]
    return eroded


def _label_eroded_seeds(seeds: np.ndarray, block_px: int) -> np.ndarray:
    """ndi.label(_erode_cross(upsampled seeds), 8-connected) from the block grid's seeds.

    Erosion by the cross keeps the middle of every block of an upsampled mask, and the pixels
    between two 4-adjacent blocks but never those between blocks that only touch at a corner,
    so its 8-connected components are the grid's 4-connected components, met in the same
    raster order: the grid can be labelled instead and the labels upsampled onto the erosion.
    """
    if block_px == 1:
        return ndi.label(_erode_cross(seeds), structure=_SQUARE, output=np.int32)[0]
    labels, _ = ndi.label(seeds, structure=_CROSS, output=np.int32)
    markers = _upsample(labels, block_px)  # a new array (block_px > 1)
    markers[~_erode_cross(markers > 0)] = 0
    return markers


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


def _watershed_with_lines(mask: np.ndarray, markers: np.ndarray) -> np.ndarray:
    """The reference's watershed of a binary mask by itself, with watershed lines.

    Every pixel of the mask has the same height, so the result hinges on scikit-image's queue
    order, and small changes there flip which nuclei touch diagonally later on. It therefore
    runs as one scikit-image call, cropped to the mask's bounding box (which keeps the raster
    order of every pixel and hence the queue order).
    """
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    labels = np.zeros(mask.shape, dtype=np.int32)
    if len(rows) == 0:
        return labels
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    labels[box] = _watershed(mask[box].view(np.uint8), markers[box], mask[box], watershed_line=True)
    return labels


def _watershed(image: np.ndarray, markers: np.ndarray, mask: np.ndarray, *, watershed_line: bool = False) -> np.ndarray:
    """skimage.segmentation.watershed(image, markers, mask=mask, watershed_line=...), int32.

    The public function converts, masks, pads and crops full copies of its inputs, which costs
    about a third of a call on a 2048 px field; this builds the padded arrays once and runs
    scikit-image's own flooding loop on them, with the same neighbour order, so the queue and
    the result are the same. Falls back to the public function if that loop is not there.
    """
    try:
        from skimage.morphology._util import _offsets_to_raveled_neighbors
        from skimage.segmentation._watershed_cy import watershed_raveled
    except ImportError:  # pragma: no cover - a scikit-image without these internals
        return segmentation.watershed(image, markers, mask=mask, watershed_line=watershed_line).astype(np.int32)
    height, width = image.shape
    inner = (slice(1, height + 1), slice(1, width + 1))
    padded_image = np.zeros((height + 2, width + 2), dtype=np.float64)
    padded_image[inner] = image
    padded_mask = np.zeros(padded_image.shape, dtype=np.int8)
    padded_mask[inner] = mask
    output = np.zeros(padded_image.shape, dtype=np.int32)
    np.copyto(output[inner], markers, where=mask, casting="unsafe")
    try:
        watershed_raveled(
            padded_image.ravel(),
            np.flatnonzero(output),
            _offsets_to_raveled_neighbors(padded_image.shape, _CROSS, center=(1, 1)),
            padded_mask.ravel(),
            np.array([width + 2, 1], dtype=np.intp),
            0.0,
            output.ravel(),
            watershed_line,
        )
    except TypeError:  # pragma: no cover - a scikit-image whose loop takes other arguments
        return segmentation.watershed(image, markers, mask=mask, watershed_line=watershed_line).astype(np.int32)
    return output[inner]


def _flood_cell_bodies(landscape: np.ndarray, nuclei: np.ndarray, cell_mask_coarse: np.ndarray, *, block_px: int) -> np.ndarray:
    """The first cell watershed: nuclei flood the cell body mask, lowest landscape first."""
    if block_px == 1:
        return _flood(landscape, nuclei, cell_mask_coarse)
    in_mask = _upsample(cell_mask_coarse, block_px) & (nuclei > 0)
    # A block is a marker when any of its pixels is; ties between two nuclei in a block go to
    # the larger id, a one-block difference that the closing below smooths over.
    block_markers = np.where(cell_mask_coarse, _block_max(nuclei, block_px), 0)
    coarse = _watershed(landscape[::block_px, ::block_px], block_markers, cell_mask_coarse)
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


def _flood(landscape: np.ndarray, markers: np.ndarray, mask: np.ndarray, *, markers_in_mask: bool = False) -> np.ndarray:
    """scikit-image's watershed(landscape, markers, mask=mask), flooding only what it must.

    A connected region of unlabelled mask pixels next to a single label ends up wholly that
    label, whatever the landscape, so it is filled directly. Regions next to several labels are
    flooded by scikit-image on their bounding box, seeded by the labelled pixels that border
    them. That changes only the order of equally high seeds in scikit-image's queue, so a few
    pixels where two floods meet on a plateau may go the other way. `markers_in_mask=True`
    says that no marker lies outside the mask, which saves masking them.
    """
    if not markers_in_mask:
        markers = np.where(mask, markers, 0)
    markers = markers.astype(np.int32, copy=False)
    unlabelled = mask & (markers == 0)
    regions, region_count = ndi.label(unlabelled, structure=_CROSS, output=np.int32)
    seeds = _dilate_cross(unlabelled) & (markers > 0)
    region_ids, neighbour_labels = _adjacent_labels(regions, markers, np.nonzero(seeds))
    labels_per_region = np.bincount(region_ids, minlength=region_count + 1)
    fill = np.zeros(region_count + 1, dtype=np.int32)
    single = labels_per_region[region_ids] == 1
    fill[region_ids[single]] = neighbour_labels[single]
    flooded = markers + fill[regions] if fill.any() else markers.copy()

    height, width = markers.shape
    boxes = ndi.find_objects(regions)
    for region in np.flatnonzero(labels_per_region >= 2):
        rows, cols = boxes[region - 1]
        box = (
            slice(max(rows.start - 1, 0), min(rows.stop + 1, height)),
            slice(max(cols.start - 1, 0), min(cols.stop + 1, width)),
        )
        inside = regions[box] == region
        region_seeds = _dilate_cross(inside) & seeds[box]
        result = _watershed(landscape[box], np.where(region_seeds, markers[box], 0), inside | region_seeds)
        np.copyto(flooded[box], result, where=inside)
    return flooded


def _adjacent_labels(
    regions: np.ndarray, markers: np.ndarray, seed_pixels: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (region id, label) pairs of labelled seed pixels and their 4-adjacent regions."""
    rows, cols = seed_pixels
    height, width = regions.shape
    labels = markers[rows, cols].astype(np.int64)
    label_range = int(labels.max(initial=0)) + 1
    pairs = []
    for row_step, col_step in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        neighbour_rows = np.clip(rows + row_step, 0, height - 1)
        neighbour_cols = np.clip(cols + col_step, 0, width - 1)
        region_ids = regions[neighbour_rows, neighbour_cols]
        touching = region_ids > 0
        pairs.append(region_ids[touching] * label_range + labels[touching])
    unique_pairs = np.unique(np.concatenate(pairs))
    return unique_pairs // label_range, unique_pairs % label_range


def _dilate_cross(mask: np.ndarray) -> np.ndarray:
    dilated = mask.copy()
    dilated[1:] |= mask[:-1]
    dilated[:-1] |= mask[1:]
    dilated[:, 1:] |= mask[:, :-1]
    dilated[:, :-1] |= mask[:, 1:]
    return dilated
