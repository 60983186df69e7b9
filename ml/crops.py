"""Per-cell crops: each cell alone on black, centred in a square, resized to the classifier input.

Neighbours and background are zeroed so a crop shows one cell only (as the best HPA
single-cell solutions did); the square is padded rather than stretched so shapes keep their
aspect ratio.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from ml.constants import CHANNELS
from ml.io import FieldImages


@dataclass(frozen=True, eq=False)
class CellCrops:
    cell_ids: np.ndarray  # int64 (N,)
    bboxes: np.ndarray  # int64 (N, 4): min_row, min_col, max_row, max_col (half-open)
    areas_px: np.ndarray  # int64 (N,)
    images: np.ndarray  # float32 (N, 4, S, S)

    def __len__(self) -> int:
        return len(self.cell_ids)


def cell_boxes(cell_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cell_ids (N,), bboxes (N, 4) half-open, areas_px (N,)) of the nonzero labels, ids ascending."""
    if cell_labels.ndim != 2:
        raise ValueError(f"Cell labels must be 2-D (H, W), got shape {cell_labels.shape}.")
    cell_ids, bboxes = _find_boxes(cell_labels)
    # Counted inside each box: a bincount of the whole field costs more than all the boxes together.
    areas_px = np.array(
        [
            np.count_nonzero(cell_labels[top:bottom, left:right] == cell_id)
            for cell_id, (top, left, bottom, right) in zip(cell_ids, bboxes, strict=True)
        ],
        dtype=np.int64,
    )
    return cell_ids, bboxes, areas_px


def _find_boxes(cell_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    slices = ndimage.find_objects(cell_labels)
    cell_ids = np.array([index + 1 for index, box in enumerate(slices) if box is not None], dtype=np.int64)
    bboxes = np.array(
        [(rows.start, cols.start, rows.stop, cols.stop) for rows, cols in filter(None, slices)], dtype=np.int64
    ).reshape(-1, 4)
    return cell_ids, bboxes


def field_planes(field: FieldImages) -> list[np.ndarray]:
    """The field's channels in `CHANNELS` order as (H, W) float32 planes, a missing one all zeros:
    what `FieldImages.stack()` holds, without copying the field into one array."""
    zeros = np.broadcast_to(np.float32(0.0), field.shape)
    planes = [getattr(field, name) for name in CHANNELS]
    return [zeros if plane is None else plane.astype(np.float32, copy=False) for plane in planes]


def crop_cells(stack: np.ndarray | Sequence[np.ndarray], cell_labels: np.ndarray, *, size_px: int = 128) -> CellCrops:
    """Crop every labelled cell of a (4, H, W) float32 stack (or a sequence of its (H, W) planes,
    as `field_planes` gives) into (N, 4, size_px, size_px)."""
    shapes = {plane.shape for plane in stack} if isinstance(stack, Sequence) else {stack.shape[1:]}
    if (not isinstance(stack, Sequence) and stack.ndim != 3) or shapes != {cell_labels.shape}:
        shape = stack.shape if isinstance(stack, np.ndarray) else f"{len(stack)} planes of {sorted(shapes)}"
        raise ValueError(f"Stack (C, H, W) {shape} does not match cell labels (H, W) {cell_labels.shape}.")
    channels = len(stack)
    if cell_labels.ndim != 2:
        raise ValueError(f"Cell labels must be 2-D (H, W), got shape {cell_labels.shape}.")
    cell_ids, bboxes = _find_boxes(cell_labels)
    areas_px = np.zeros(len(cell_ids), dtype=np.int64)
    images = np.zeros((len(cell_ids), channels, size_px, size_px), dtype=np.float32)
    for index, (cell_id, (top, left, bottom, right)) in enumerate(zip(cell_ids, bboxes, strict=True)):
        is_cell = cell_labels[top:bottom, left:right] == cell_id
        areas_px[index] = np.count_nonzero(is_cell)
        if isinstance(stack, np.ndarray):
            window = stack[:, top:bottom, left:right] * is_cell
        else:
            window = np.stack([plane[top:bottom, left:right] * is_cell for plane in stack])
        place_resized(window, images[index])
    return CellCrops(cell_ids=cell_ids, bboxes=bboxes, areas_px=areas_px, images=images)


def place_resized(planes: np.ndarray, out: np.ndarray) -> None:
    """Resize (C, h, w) float32 planes so the longer side fills `out` (C, S, S), centred, into `out`.

    Scaling the longer side to S and centring is the same as padding the box to a square with
    background first, without resampling the padding.
    """
    size_px = out.shape[-1]
    height, width = planes.shape[-2:]
    scale = size_px / max(height, width)
    out_height, out_width = max(1, round(height * scale)), max(1, round(width * scale))
    row, col = (size_px - out_height) // 2, (size_px - out_width) // 2
    for channel, plane in enumerate(planes):
        # Pillow's bilinear filter widens with the shrink factor (antialiased, close to area
        # resampling) and runs on one thread, so cropping stays fast on a busy machine.
        resized = Image.fromarray(plane).resize((out_width, out_height), Image.Resampling.BILINEAR)
        out[channel, row : row + out_height, col : col + out_width] = np.asarray(resized)


def normalize_crops(images: torch.Tensor, *, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Per-channel (x - mean) / std of (N, C, S, S) crops; training and serving both use this."""
    channel_mean = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    channel_std = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images - channel_mean) / channel_std
