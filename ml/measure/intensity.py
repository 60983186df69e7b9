"""Intensity of one cell in each channel present, and the focus of its image.

Values are in the channel's own units as read (`ml.io`: 0 to 1 of the file's bit depth), so they
compare between cells of one field and between fields of one acquisition:
- per channel: mean, median, std, max, integrated (sum over the cell's pixels);
- protein (green): the nucleus-to-cytoplasm ratio (mean in the nucleus over mean in the rest of the
  cell; NaN without cytoplasm or with a dark cytoplasm) and its Pearson correlation with each
  reference channel present (red, blue, yellow) over the cell's pixels;
- focus: the energy of the Laplacian over the variance, inside the cell, of the nucleus and protein
  channels block-averaged by `FOCUS_BIN_PX` (which removes pixel noise), averaged over the two.
  Blur lowers it; quality control compares it with the field's other cells (`ml.qc`).
"""

import functools

import numpy as np
from scipy import ndimage

from ml.constants import CHANNELS
from ml.io import to_unit_float
from ml.measure.shape import erode

STATISTICS: tuple[str, ...] = ("mean", "median", "std", "max", "integrated")
REFERENCES: tuple[str, ...] = ("red", "blue", "yellow")
FOCUS_BIN_PX = 2
FOCUS_CHANNELS: tuple[str, ...] = ("blue", "green")
# Below this many pixels a partial sort finds the median as fast as a histogram.
HISTOGRAM_MEDIAN_MIN_PX = 2048


def intensity_names() -> tuple[str, ...]:
    """Every intensity measurement, for all four channels (a missing channel's are NaN)."""
    per_channel = tuple(f"{channel}_{statistic}" for channel in CHANNELS for statistic in STATISTICS)
    green = ("green_nucleus_cytoplasm_ratio", *(f"green_{reference}_correlation" for reference in REFERENCES))
    return (*per_channel, *green, "focus")


def intensity_features(
    windows: dict[str, np.ndarray],
    cell_mask: np.ndarray,
    nucleus_mask: np.ndarray,
    *,
    values: dict[str, np.ndarray] | None = None,
    pixels: np.ndarray | None = None,
    levels: int | None = None,
) -> list[float]:
    """`intensity_names()` of one cell from its channels' windows (h, w) over its box (present ones only);
    `values`: each window's pixels in the cell (`window[cell_mask]`) and `pixels`: `np.flatnonzero(cell_mask)`,
    where the caller has them already; `levels`: 2**bit_depth - 1 of the file the channels were read
    from (None: not read from integers)."""
    if pixels is None:
        pixels = np.flatnonzero(cell_mask)  # then `take`: the same values as window[cell_mask], several times faster
    if values is None:
        values = {name: np.ascontiguousarray(window).ravel().take(pixels) for name, window in windows.items()}
    features: list[float] = []
    centred: dict[str, np.ndarray] = {}
    squares: dict[str, float] = {}  # sum of the centred values squared
    for channel in CHANNELS:
        inside = values.get(channel)
        if inside is None or inside.size == 0:
            features += [np.nan] * len(STATISTICS)
            continue
        total = float(inside.sum(dtype=np.float64))
        mean = total / inside.size
        median, largest = _median_and_max(inside, levels)
        # float64 deviations (np.float64: a Python float would keep them float32), for std and correlation.
        deviations = inside - np.float64(mean)
        squares[channel] = float(np.einsum("i,i->", deviations, deviations))
        features += [mean, median, float(np.sqrt(squares[channel] / inside.size)), largest, total]
        if channel == "green" or channel in REFERENCES:
            centred[channel] = deviations
    green = values["green"]
    in_nucleus = nucleus_mask.ravel().take(pixels)  # of the cell's pixels, those of its nucleus
    ratio = np.nan
    nucleus_count = int(np.count_nonzero(in_nucleus))
    if 0 < nucleus_count < len(in_nucleus):
        cytoplasm_mean = float(green[~in_nucleus].mean())
        ratio = float(green[in_nucleus].mean()) / cytoplasm_mean if cytoplasm_mean > 0 else np.nan
    features.append(ratio)
    for reference in REFERENCES:
        features.append(
            _correlation(centred["green"], centred[reference], squares["green"] * squares[reference])
            if reference in centred
            else np.nan
        )
    features.append(_focus(windows, cell_mask))
    return features


def _correlation(first: np.ndarray, second: np.ndarray, squares_product: float) -> float:
    """Pearson correlation of two centred (float64) samples, given the product of their sums of squares.
    `einsum`, not `@`: a BLAS dot product spins its threads on a busy machine."""
    norm = float(np.sqrt(squares_product))
    return float(np.einsum("i,i->", first, second)) / norm if norm > 0 else np.nan


def _median_and_max(inside: np.ndarray, levels: int | None) -> tuple[float, float]:
    """np.median's and np.max's values of a float32 sample.

    Pixels read from an 8- or 16-bit file are `k / levels` (`ml.io`): their median comes from a histogram
    of the `k`, several times faster than a partial sort of many pixels that share few values. The `k`
    are checked to give back every value exactly, so other samples (rescaled or float data) take the
    partial sort, with the same result.
    """
    lower, upper = (inside.size - 1) // 2, inside.size // 2
    if levels is not None and inside.size >= HISTOGRAM_MEDIAN_MIN_PX:
        codes = np.rint(inside * np.float32(levels)).astype(np.intp)
        values = _unit_levels(levels)
        # A code out of range (or NaN's) is clipped to a level whose value differs from the pixel's.
        if np.array_equal(values.take(codes, mode="clip"), inside):
            counts = np.bincount(codes)  # length: the largest code + 1
            ranks = np.searchsorted(np.cumsum(counts), (lower + 1, upper + 1))
            middle = values.take(ranks)  # the lower and upper middle values, as a partial sort leaves them
            return float(np.mean(middle[: upper - lower + 1])), float(values[len(counts) - 1])
    # np.median's value (the mean of the one or two middle values) from one partial sort, O(n).
    middle = np.partition(inside, (lower, upper))[lower : upper + 1]
    return float(np.mean(middle)), float(inside.max())


@functools.cache
def _unit_levels(levels: int) -> np.ndarray:
    """float32 k / levels for k = 0..levels, as `ml.io` reads them (levels: an unsigned type's maximum)."""
    codes = np.arange(levels + 1, dtype=np.min_scalar_type(levels))
    if np.iinfo(codes.dtype).max != levels:
        raise ValueError(f"levels={levels} is not the maximum of an unsigned integer type (255, 65535).")
    return to_unit_float(codes)


def _focus(windows: dict[str, np.ndarray], cell_mask: np.ndarray) -> float:
    height, width = cell_mask.shape
    rows, cols = height // FOCUS_BIN_PX * FOCUS_BIN_PX, width // FOCUS_BIN_PX * FOCUS_BIN_PX
    if rows < 3 * FOCUS_BIN_PX or cols < 3 * FOCUS_BIN_PX:
        return np.nan
    mask = cell_mask[:rows:FOCUS_BIN_PX, :cols:FOCUS_BIN_PX]
    mask = erode(mask)  # the Laplacian at the mask's rim sees the neighbours
    if not mask.any():
        return np.nan
    scores = []
    for channel in FOCUS_CHANNELS:
        binned = _bin_means(windows[channel][:rows, :cols])
        laplacian = ndimage.laplace(binned)[mask]
        variance = float(binned[mask].var())
        if variance > 0:
            scores.append(float(np.mean(laplacian.astype(np.float64) ** 2)) / variance)
    return float(np.mean(scores)) if scores else np.nan


def _bin_means(window: np.ndarray) -> np.ndarray:
    """float32 means of `FOCUS_BIN_PX` x `FOCUS_BIN_PX` blocks, the same values as
    `reshape(h / 2, 2, w / 2, 2).mean(axis=(1, 3), dtype=float32)` (that sum order) at a tenth of its time."""
    if FOCUS_BIN_PX != 2:
        rows, cols = window.shape
        shape = (rows // FOCUS_BIN_PX, FOCUS_BIN_PX, cols // FOCUS_BIN_PX, FOCUS_BIN_PX)
        return window.reshape(shape).mean(axis=(1, 3), dtype=np.float32)
    window = window.astype(np.float32, copy=False)
    total = window[0::2, 0::2] + window[0::2, 1::2]
    total += window[1::2, 0::2] + window[1::2, 1::2]
    total /= np.float32(4)
    return total
