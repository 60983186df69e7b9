"""The HPA post-processing's watersheds, and the block grid they may run on.

Every watershed runs the flooding loop of `ml.segmentation.hpa.flood` on padded arrays built
once. Predictions restored from the network's quarter-scale output are constant on 4 x 4
blocks, so the cell-body watershed, whose full-resolution result differs from the block grid's
only where two floods meet on a plateau, runs on the 16x smaller grid (`flood_cell_bodies`);
the watershed that extends cells into their borders queues only the labelled pixels next to
unlabelled ones (`watershed_from_fronts`).
"""

import numpy as np

from ml.segmentation.hpa.flood import flood_padded, padded, padded_mask_and_markers
from ml.segmentation.hpa.morphology import dilate_cross, erode_cross


def watershed_with_lines(
    mask: np.ndarray, markers: np.ndarray, *, block_px: int, erode_markers: bool = False
) -> np.ndarray:
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
    upsample_into(padded_mask[1:-1, 1:-1], box_mask, block_px)
    output = np.zeros(padded_mask.shape, dtype=np.int32)
    upsample_into(output[1:-1, 1:-1], box_markers, block_px)
    if erode_markers:
        inner = output[1:-1, 1:-1]
        inner[~erode_cross(inner > 0)] = 0
    flood_padded(None, output, padded_mask, watershed_line=True)
    if (height, width) == shape:
        return output[1:-1, 1:-1]
    labels = np.zeros(shape, dtype=np.int32)
    labels[tuple(slice(part.start * block_px, part.stop * block_px) for part in grid_box)] = output[1:-1, 1:-1]
    return labels


def watershed(landscape: np.ndarray, markers: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """skimage.segmentation.watershed(landscape, markers, mask=mask) of a uint8 landscape, int32,
    with the same queue and result."""
    padded_mask, output = padded_mask_and_markers(mask, markers)
    flood_padded(padded(landscape), output, padded_mask, watershed_line=False)
    return output[1:-1, 1:-1]


def watershed_from_fronts(landscape: np.ndarray, markers: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """scikit-image's watershed(landscape, markers, mask=mask) of a uint8 landscape, int32,
    queueing only the labelled pixels that border unlabelled ones.

    A marker pixel whose neighbours are all labelled or outside the mask pushes nothing when
    it leaves the queue, so leaving it out changes only the order of equally high seeds in
    scikit-image's queue: a few pixels where two floods meet on a plateau may go the other way.
    The queue is then a small fraction of the pixels.
    """
    padded_mask, output = padded_mask_and_markers(mask, markers)
    labelled = output != 0
    seeds = labelled & dilate_cross(padded_mask.view(bool) & ~labelled)
    flood_padded(padded(landscape), output, padded_mask, watershed_line=False, seeds=np.flatnonzero(seeds))
    return output[1:-1, 1:-1]


def flood_cell_bodies(
    landscape: np.ndarray, nuclei: np.ndarray, cell_mask_coarse: np.ndarray, *, block_px: int
) -> np.ndarray:
    """The first cell watershed: nuclei flood the cell body mask, lowest landscape first."""
    if block_px == 1:
        return watershed_from_fronts(landscape, nuclei, cell_mask_coarse)
    in_mask = upsample(cell_mask_coarse, block_px) & (nuclei > 0)
    # A block is a marker when any of its pixels is; ties between two nuclei in a block go to
    # the larger id, a one-block difference that the closing below smooths over.
    block_markers = np.where(cell_mask_coarse, block_max(nuclei, block_px), 0)
    coarse = watershed(landscape, block_markers, cell_mask_coarse)
    cells = upsample(coarse, block_px)  # a new array (block_px > 1)
    np.copyto(cells, nuclei, where=in_mask)
    return cells


def upsample_into(out: np.ndarray, image: np.ndarray, block_px: int) -> None:
    """Write `image` upsampled by `block_px` (pixel replication) into the 2-D view `out`."""
    wide = np.repeat(image, block_px, axis=1)
    for row in range(block_px):
        out[row::block_px] = wide


def upsample(image: np.ndarray, block_px: int) -> np.ndarray:
    if block_px == 1:
        return image
    out = np.empty((image.shape[0] * block_px, image.shape[1] * block_px), dtype=image.dtype)
    upsample_into(out, image, block_px)
    return out


def block_max(image: np.ndarray, block_px: int) -> np.ndarray:
    """Maximum over each block_px x block_px block."""
    columns = image[:, ::block_px].copy()
    for offset in range(1, block_px):
        np.maximum(columns, image[:, offset::block_px], out=columns)
    blocks = columns[::block_px].copy()
    for offset in range(1, block_px):
        np.maximum(blocks, columns[offset::block_px], out=blocks)
    return blocks
