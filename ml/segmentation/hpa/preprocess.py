"""Input and output handling of the HPA segmentation networks, as hpacellseg's CellSegmentator.

Inputs: the field is scaled by 0.25 (bilinear with Gaussian anti-aliasing, as
skimage.transform.rescale), normalised with the DPN ImageNet constants and reflect-padded by 32
px on the top and left and up to the next multiple of 32 on the bottom and right (so 2048 px
fields become 576 and 1728 px fields 480 at the network). The nuclei network sees the blue
channel three times, the cell network (red, yellow, blue).

Outputs: the softmax is cropped back to the scaled field, channel 0 (unused) is zeroed, the map
is resized to the field with OpenCV's INTER_AREA rule (pixel replication for the usual x4) and
converted to uint8 by rint(255 p): before the resize for nuclei and after it for cells, in the
order hpacellseg does it.

Constants and rules come from constants.json of the reference data (CellSegmentator at
CellProfiling/HPA-Cell-Segmentation@7b6dbc6); checkpoints carry scale, mean and std in their
config so that training and serving read them from one place.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from skimage.transform import rescale

from ml.io import FieldImages

SCALE_FACTOR = 0.25
# (124, 117, 104) / 255 and 1 / (0.0167 * 255), per network input channel, on [0, 1] data.
MEAN: tuple[float, float, float] = (124 / 255, 117 / 255, 104 / 255)
STD: tuple[float, float, float] = (1 / (0.0167 * 255),) * 3
PAD_PX = 32  # also the multiple the network needs (five stride-2 steps)
KINDS: tuple[str, ...] = ("nuclei", "cell")
NUCLEI_INPUT_CHANNELS: tuple[str, str, str] = ("blue", "blue", "blue")
CELL_INPUT_CHANNELS: tuple[str, str, str] = ("red", "yellow", "blue")


@dataclass(frozen=True)
class NetworkInput:
    """One field prepared for a network."""

    image: np.ndarray  # float32 (3, H', W'), normalised and padded; H', W' multiples of PAD_PX
    scaled_shape: tuple[int, int]  # (h, w): the scaled field inside the padding, from (PAD_PX, PAD_PX)
    field_shape: tuple[int, int]  # (H, W) of the field


def input_channels(field: FieldImages, *, kind: str) -> tuple[tuple[str, str, str], tuple[str, ...]]:
    """The field channels feeding each network input, and the field channels used.

    The cell network was trained on (microtubules, ER, nucleus). A missing red or yellow
    channel is replaced by the other one, which also outlines the cytoplasm; with neither, the
    protein channel (green) stands in for both, which outlines cells less reliably.
    """
    check_kind(kind)
    if kind == "nuclei":
        return NUCLEI_INPUT_CHANNELS, ("blue",)
    present = [name for name in ("red", "yellow") if getattr(field, name) is not None]
    if len(present) == 2:
        return CELL_INPUT_CHANNELS, ("blue", "red", "yellow")
    substitute = present[0] if present else "green"
    return (substitute, substitute, "blue"), ("blue", substitute)


def prepare_input(
    channels: Sequence[np.ndarray],
    *,
    scale_factor: float = SCALE_FACTOR,
    mean: Sequence[float] = MEAN,
    std: Sequence[float] = STD,
) -> NetworkInput:
    """Scale, normalise and pad three (H, W) images in [0, 1] into one network input.

    A channel passed several times (the nuclei network's blue) is scaled once.
    """
    scaled: dict[int, np.ndarray] = {}
    for channel in channels:
        if id(channel) not in scaled:
            scaled[id(channel)] = downscale(channel, scale_factor)
    return pad_and_normalise(
        [scaled[id(channel)] for channel in channels], field_shape=channels[0].shape, mean=mean, std=std
    )


def downscale(image: np.ndarray, scale_factor: float = SCALE_FACTOR) -> np.ndarray:
    """skimage.transform.rescale(image, scale_factor) of an image in [0, 1], as float64.

    Bilinear, with a Gaussian anti-aliasing blur of sigma (1/scale - 1)/2 and mirrored edges;
    the output has round(H * scale) x round(W * scale) pixels.
    """
    return rescale(np.asarray(image, dtype=np.float64), scale_factor, anti_aliasing=True)


def pad_and_normalise(
    scaled: Sequence[np.ndarray],
    *,
    field_shape: tuple[int, int],
    mean: Sequence[float] = MEAN,
    std: Sequence[float] = STD,
) -> NetworkInput:
    """Three scaled (h, w) planes -> one normalised, padded network input."""
    if len(scaled) != 3:
        raise ValueError(f"The network takes 3 input channels, got {len(scaled)}.")
    height, width = scaled[0].shape
    # cv2.BORDER_REFLECT repeats the edge pixel (numpy's "symmetric"); the bottom/right pad is
    # 32 - size % 32, a full 32 when the size is already a multiple.
    padding = ((PAD_PX, PAD_PX - height % PAD_PX), (PAD_PX, PAD_PX - width % PAD_PX))
    image = np.stack(
        [np.pad((plane - mean[index]) / std[index], padding, mode="symmetric") for index, plane in enumerate(scaled)]
    ).astype(np.float32)
    return NetworkInput(image=image, scaled_shape=(height, width), field_shape=tuple(field_shape))


def restore_prediction(probabilities: np.ndarray, *, network_input: NetworkInput, kind: str) -> np.ndarray:
    """Softmax output (3, H', W') of one input -> uint8 (H, W, 3) [0, border, foreground] map."""
    check_kind(kind)
    height, width = network_input.scaled_shape
    cropped = np.array(probabilities[:, PAD_PX : PAD_PX + height, PAD_PX : PAD_PX + width], dtype=np.float32)
    cropped[0] = 0
    cropped = cropped.transpose(1, 2, 0)
    # hpacellseg passes (rows, cols) where OpenCV expects (width, height), which transposes
    # non-square fields; the field's own shape is used here instead.
    if kind == "nuclei":
        return _resize_area(_to_ubyte(cropped), network_input.field_shape)
    return _to_ubyte(_resize_area(cropped, network_input.field_shape))


def check_kind(kind: str) -> None:
    """Raise ValueError with a sentence unless `kind` names one of the two networks."""
    if kind not in KINDS:
        raise ValueError(f"Unknown segmentation network kind {kind!r}; use one of {', '.join(KINDS)}.")


def _to_ubyte(probabilities: np.ndarray) -> np.ndarray:
    """skimage's img_as_ubyte of float32 data in [0, 1]: rint(255 p), computed in float32."""
    return np.clip(np.rint(probabilities * np.float32(255)), 0, 255).astype(np.uint8)


def _resize_area(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """cv2.resize(image, (W, H), interpolation=cv2.INTER_AREA) for enlarging, per channel.

    An integer factor replicates pixels. Other factors use OpenCV's linear weights of INTER_AREA
    enlargement, in floating point (OpenCV's fixed-point uint8 arithmetic can differ by one).
    """
    height, width = shape
    source_height, source_width = image.shape[:2]
    if (height, width) == (source_height, source_width):
        return image
    if height % source_height == 0 and width % source_width == 0:
        return image.repeat(height // source_height, axis=0).repeat(width // source_width, axis=1)
    if height < source_height or width < source_width:
        raise ValueError(f"Cannot enlarge a {source_height}x{source_width} map to {height}x{width}.")
    rows_low, rows_weight = _area_enlarge_weights(source_height, height)
    cols_low, cols_weight = _area_enlarge_weights(source_width, width)
    data = image.astype(np.float64)
    rows_high = np.minimum(rows_low + 1, source_height - 1)
    cols_high = np.minimum(cols_low + 1, source_width - 1)
    weight = rows_weight[:, None, None] if data.ndim == 3 else rows_weight[:, None]
    data = data[rows_low] * (1 - weight) + data[rows_high] * weight
    weight = cols_weight[None, :, None] if data.ndim == 3 else cols_weight[None, :]
    data = data[:, cols_low] * (1 - weight) + data[:, cols_high] * weight
    if image.dtype == np.uint8:
        return np.clip(np.rint(data), 0, 255).astype(np.uint8)
    return data.astype(image.dtype)


def _area_enlarge_weights(source_size: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per output index: the lower source index and the weight of the next one (OpenCV resize.cpp)."""
    scale = source_size / size
    inverse_scale = size / source_size
    index = np.arange(size)
    low = np.floor(index * scale).astype(np.intp)
    weight = ((index + 1) - (low + 1) * inverse_scale).astype(np.float32)
    weight = np.where(weight <= 0, 0, weight - np.floor(weight))
    at_edge = low >= source_size - 1
    return np.where(at_edge, source_size - 1, low), np.where(at_edge, 0, weight).astype(np.float64)
