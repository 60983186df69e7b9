"""HPA-Cell-Segmentation's `label_nuclei` and `label_cell`, re-implemented for speed.

The reference (hpacellseg.utils at CellProfiling/HPA-Cell-Segmentation@7b6dbc6) turns the
uint8 softmax maps of its two U-Nets ([unused, touching border, foreground] x (H, W)) into label
images with thresholds, seeded watersheds and size filters. These functions give the same
objects with scikit-image >= 0.25 (whose watershed they reproduce) in a ninth to an eighth of
the time on a 2048 px field (`python -m bench.postprocess`). This module holds the two public
functions and the reference's constants; the steps live in

- `morphology`: thresholds, size filters, hole filling and the closing, each exact;
- `watershed`: the seeded watersheds, some on the block grid;
- `flood`: the one flooding loop all watersheds run (compiled C, or scikit-image's).

Predictions restored from the network's quarter-scale output are constant on 4 x 4 blocks
(`_BLOCK_PX`), so the block-exact steps run on the 16x smaller block grid.

Reference quirks that change the output are kept on purpose and marked "Reference quirk".
The one not kept: the reference casts cell labels to uint8 mid-way, so fields with more than
255 cells wrapped; labels here are int32 throughout.
"""

import numpy as np
from scipy import ndimage as ndi

from ml.segmentation.hpa.morphology import (
    CROSS,
    SQUARE,
    closing_disk,
    erode_cross,
    fill_small_holes,
    label_areas,
    label_large_components,
    otsu_of_uint8,
    relabel_in_raster_order,
    remove_small_labels,
    remove_small_objects,
    smallest_uint8_where,
    split_and_fill_holes,
)
from ml.segmentation.hpa.watershed import flood_cell_bodies, upsample, watershed_from_fronts, watershed_with_lines

# The reference network sees the field at scale 0.25 and its output is upscaled x4 by pixel
# replication, so restored predictions are constant on blocks of this side.
_BLOCK_PX = 4

# Sizes in pixels at full resolution (hpacellseg/utils.py).
_HOLE_AREA_PX = 1000
_NUCLEUS_MIN_AREA_PX = 2500
_NUCLEUS_SEED_MIN_AREA_PX = 500
_NUCLEUS_MASK_MIN_AREA_PX = 8
_CELL_MIN_AREA_PX = 5500
_CLOSING_RADIUS_PX = 6

# The reference compares float images (uint8 / 255) with float thresholds; evaluating the very
# same expressions on every uint8 value gives integer thresholds with identical results.
_NUCLEUS_SEED_MIN = smallest_uint8_where(lambda v: v / 255.0 > 0.4 + -0.25)
_NUCLEUS_MASK_MIN = smallest_uint8_where(lambda v: v / 255.0 > 0.4)
_CELL_BORDER_MIN = smallest_uint8_where(lambda v: v / 255 > 0.05)
_BORDER_SUM_MAX = smallest_uint8_where(lambda s: not 1 - s / 255.0 > 0.05) - 1


def label_nuclei(nuclei_pred: np.ndarray) -> np.ndarray:
    """Label nuclei from the nuclei model's (H, W, 3) uint8 prediction; int32 (H, W), 0 = background."""
    _check_prediction(nuclei_pred, name="nuclei_pred")
    block = _block_px(nuclei_pred)
    border, body = _grid_channel(nuclei_pred, 1, block), _grid_channel(nuclei_pred, 2, block)
    # Reference quirk: the uint8 maps are compared with 0.05, 0.15 and 0.4 as they are, so
    # "above threshold" means "not zero".
    seeds = (border == 0) & (body > 0)
    mask = fill_small_holes(body > 0, _HOLE_AREA_PX, block_px=block)
    if block == 1:
        markers, eroded = ndi.label(erode_cross(seeds), structure=SQUARE, output=np.int32)[0], False
    else:
        # The grid's 4-connected seeds, eroded once upsampled: see `watershed_with_lines`.
        markers, eroded = ndi.label(seeds, structure=CROSS, output=np.int32)[0], True
    nuclei = watershed_with_lines(mask, markers, block_px=block, erode_markers=eroded)
    return relabel_in_raster_order(nuclei, min_area_px=_NUCLEUS_MIN_AREA_PX)


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
    seeds = remove_small_objects(seeds, _NUCLEUS_SEED_MIN_AREA_PX, block_px=block, structure=CROSS)
    nuclei_mask = fill_small_holes(nuclei_body >= _NUCLEUS_MASK_MIN, _HOLE_AREA_PX, block_px=block)
    nuclei_mask = remove_small_objects(nuclei_mask, _NUCLEUS_MASK_MIN_AREA_PX, block_px=block, structure=CROSS)
    markers, _ = ndi.label(seeds, structure=CROSS, output=np.int32)
    nuclei = watershed_with_lines(nuclei_mask, markers, block_px=block)
    nuclei = relabel_in_raster_order(nuclei, min_area_px=_NUCLEUS_MIN_AREA_PX)

    # A block-constant image holds each value of its block grid block**2 times, a power of two,
    # so every sum in Otsu's method scales exactly and the grid gives the same threshold.
    threshold = max(0.22, otsu_of_uint8(cell_body) * 0.5)
    cell_mask = cell_body >= smallest_uint8_where(lambda v: v / 255 > threshold)
    # Reference quirk: the step meant to exclude the border ("green") area multiplies by
    # np.invert of an int8 0/1 array, which is never zero, so no border is excluded; and the
    # np.clip meant to floor the landscape at the threshold has a_min > a_max where it would
    # act, which returns the image unchanged. The landscape is the cell body map itself.
    landscape = 255 - cell_body  # on the block grid
    cells = flood_cell_bodies(landscape, nuclei, cell_mask, block_px=block)
    cells = remove_small_labels(cells, _CELL_MIN_AREA_PX)
    cells = closing_disk(cells, _CLOSING_RADIUS_PX)
    cells = split_and_fill_holes(cells)
    # Extend the cells into the predicted borders between them.
    border_mask = upsample(cell_border >= _CELL_BORDER_MIN, block)
    cells = watershed_from_fronts(upsample(landscape, block), cells, (cells > 0) | border_mask)
    # The reference fills holes and labels 4-connected pieces, then relabels the pieces'
    # mask 8-connected: labelling the filled mask 8-connected at once gives the same.
    cells = label_large_components(split_and_fill_holes(cells, labelled=False), _CELL_MIN_AREA_PX)

    nuclei_pieces, piece_count = ndi.label((cells > 0) & (nuclei > 0), structure=SQUARE, output=np.int32)
    large = label_areas(nuclei_pieces, piece_count) >= _NUCLEUS_MIN_AREA_PX
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
