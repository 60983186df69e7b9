"""Texture of the protein (green) channel of one cell: Haralick, local binary patterns, wavelet scattering.

Every texture is computed on the cell's masked crop at a fixed size (`TEXTURE_SIZE_PX`, the longer
side of the cell's box scaled to it, as the classifier's crops are made by `ml.crops.crop_cells`),
so the same cell imaged at another pixel size gives comparable figures; intensities are scaled
by the cell's own robust maximum, so the textures do not depend on brightness or bit depth.

Parameters (each defined once here):
- Haralick: the grey-level co-occurrence matrix (scikit-image `graycomatrix`) of the cell's pixels
  quantised to `HARALICK_LEVELS` levels, symmetric and normalised, at distance `HARALICK_DISTANCE_PX`
  in 4 directions (0, 45, 90, 135 degrees), averaged over the directions; background pixels are
  grey level 0 and left out of the matrix. 14 coefficients: scikit-image `graycoprops`' 10
  (contrast, dissimilarity, homogeneity, ASM, energy, correlation, mean, variance, std, entropy)
  and 4 more of Haralick's (sum average, sum entropy, difference variance, difference entropy).
- LBP: scikit-image `local_binary_pattern`'s codes (computed identically by `_lbp.c`, built by `make venv`,
  or without it by NumPy for all pixels at once) with P=16 neighbours on a circle of radius R=2 px,
  uniform patterns without rotation invariance (`nri_uniform`): P * (P - 1) + 3 = 243 bins,
  the histogram of the cell's pixels, summing to 1.
- Wavelet scattering (kymatio's Morlet filter bank, as its `Scattering2D` uses): the crop reduced
  to `SCATTERING_SIZE_PX` px, J=4 scales and L=8 orientations, second order:
  1 + J L + L^2 J (J - 1) / 2 = 417 coefficients, each averaged over the crop and log-compressed
  (log(1e-6 + mean)); computed for many cells at once (`scattering_features` takes a batch).
"""

import ctypes
import functools
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.feature import graycomatrix, graycoprops

from ml.native import load_library

TEXTURE_SIZE_PX = 128
HARALICK_LEVELS = 32
HARALICK_DISTANCE_PX = 2
HARALICK_ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
_GRAYCOPROPS = (
    "contrast",
    "dissimilarity",
    "homogeneity",
    "ASM",
    "energy",
    "correlation",
    "mean",
    "variance",
    "std",
    "entropy",
)
HARALICK_NAMES: tuple[str, ...] = (
    *_GRAYCOPROPS,
    "sum_average",
    "sum_entropy",
    "difference_variance",
    "difference_entropy",
)
LBP_POINTS = 16
LBP_RADIUS_PX = 2
LBP_BINS = LBP_POINTS * (LBP_POINTS - 1) + 3
SCATTERING_SIZE_PX = 64
SCATTERING_SCALES = 4  # J
SCATTERING_ORIENTATIONS = 8  # L
SCATTERING_COEFFICIENTS = (
    1
    + SCATTERING_SCALES * SCATTERING_ORIENTATIONS
    + (SCATTERING_ORIENTATIONS**2 * SCATTERING_SCALES * (SCATTERING_SCALES - 1) // 2)
)
# The robust maximum a cell's intensities are scaled by.
_CELL_MAX_PERCENTILE = 99.5


def haralick_names() -> tuple[str, ...]:
    return tuple(f"haralick_{name}" for name in HARALICK_NAMES)


def lbp_names() -> tuple[str, ...]:
    return tuple(f"lbp_{index:03d}" for index in range(LBP_BINS))


def scattering_names() -> tuple[str, ...]:
    return tuple(f"scattering_{index:03d}" for index in range(SCATTERING_COEFFICIENTS))


def scaled_to_cell(green: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The crop over its cell's robust maximum, clipped to [0, 1]; 0 outside the mask."""
    inside = green[mask]
    top = float(np.percentile(inside, _CELL_MAX_PERCENTILE)) if inside.size else 0.0
    if top <= 0.0:
        return np.zeros(green.shape, dtype=np.float32)
    return np.where(mask, np.clip(green / top, 0.0, 1.0), 0.0).astype(np.float32)


def haralick_features(green: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The 14 coefficients (`HARALICK_NAMES`) of a crop (S, S) scaled to [0, 1] and its cell mask."""
    return haralick_many([green], [mask])[0]


def haralick_many(greens, masks) -> np.ndarray:
    """(N, 14) `haralick_features` of N crops and masks, the matrices' coefficients computed together."""
    count = len(greens)
    features = np.full((count, len(HARALICK_NAMES)), np.nan)
    matrices, rows = [], []
    for index, (green, mask) in enumerate(zip(greens, masks, strict=True)):
        glcm = _cooccurrence(green, mask)
        if glcm is not None:
            matrices.append(glcm)
            rows.append(index)
    if not matrices:
        return features
    # Cells side by side on the angle axis: graycoprops computes each (distance, angle) matrix alone.
    glcm = np.concatenate(matrices, axis=3)
    angles = len(HARALICK_ANGLES)
    with np.errstate(invalid="ignore", divide="ignore"):
        props = [graycoprops(glcm, prop)[0].reshape(len(rows), angles).mean(axis=1) for prop in _GRAYCOPROPS]
    features[rows] = np.column_stack(
        [*props, _sum_difference_features(glcm).reshape(len(rows), angles, 4).mean(axis=1)]
    )
    return features


def _cooccurrence(green: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """The normalised matrix (L - 1, L - 1, 1, angles) of the cell's pairs; None without any pair."""
    levels = np.where(mask, 1 + np.minimum((green * (HARALICK_LEVELS - 1)).astype(np.int64), HARALICK_LEVELS - 2), 0)
    glcm = graycomatrix(
        levels.astype(np.uint8), [HARALICK_DISTANCE_PX], HARALICK_ANGLES, levels=HARALICK_LEVELS, symmetric=True
    ).astype(np.float64)
    glcm = glcm[1:, 1:]  # pairs with background left out
    totals = glcm.sum(axis=(0, 1), keepdims=True)
    if not totals.all():
        return None
    glcm /= totals
    return glcm


def _sum_difference_features(glcm: np.ndarray) -> np.ndarray:
    """(matrices, 4): sum average, sum entropy, difference variance, difference entropy (Haralick 1973)
    of each matrix (L, L, 1, matrices)."""
    levels, matrices = glcm.shape[0], glcm.shape[3]
    i, j = np.indices((levels, levels))
    sums, differences = (i + j).ravel(), np.abs(i - j).ravel()
    sum_bins, difference_bins = 2 * levels - 1, levels
    # One bincount for all matrices, matrix by matrix: each bin adds its terms in the same order as alone.
    offsets = np.arange(matrices)[:, None]
    weights = np.moveaxis(glcm[:, :, 0, :], 2, 0).reshape(matrices, -1)
    p_sum = np.bincount((offsets * sum_bins + sums).ravel(), weights=weights.ravel(), minlength=matrices * sum_bins)
    p_difference = np.bincount(
        (offsets * difference_bins + differences).ravel(), weights=weights.ravel(), minlength=matrices * difference_bins
    )
    p_sum, p_difference = p_sum.reshape(matrices, sum_bins), p_difference.reshape(matrices, difference_bins)
    k_sum, k_difference = np.arange(sum_bins), np.arange(difference_bins)
    results = np.empty((matrices, 4))
    for index in range(matrices):
        difference_mean = float(np.sum(k_difference * p_difference[index]))
        results[index] = (
            float(np.sum(k_sum * p_sum[index])),
            _entropy(p_sum[index]),
            float(np.sum((k_difference - difference_mean) ** 2 * p_difference[index])),
            _entropy(p_difference[index]),
        )
    return results


def _entropy(probabilities: np.ndarray) -> float:
    positive = probabilities[probabilities > 0]
    return float(-(positive * np.log(positive)).sum())


def lbp_histogram(green: np.ndarray, mask: np.ndarray, *, compiled: bool = True) -> np.ndarray:
    """The 243-bin uniform LBP histogram (P=16, R=2) of the cell's pixels, summing to 1: from `_lbp.c`
    where it is built (`compiled=False`: the NumPy code, the same counts)."""
    if not mask.any():
        return np.full(LBP_BINS, np.nan)
    # Integer grey levels, so flat regions give the same code however the floats round.
    grey = np.round(green * 255).astype(np.uint8)
    library = compiled_lbp() if compiled else None
    counts = _lbp_counts_numpy(grey, mask) if library is None else _lbp_counts_compiled(library, grey, mask)
    return counts / counts.sum()


def _lbp_counts_compiled(library: ctypes.CDLL, grey: np.ndarray, mask: np.ndarray) -> np.ndarray:
    counts = np.zeros(LBP_BINS, dtype=np.int64)
    padded = np.pad(grey, _LBP_REACH_PX)  # zeros beyond the crop, scikit-image's constant mode
    cell = np.ascontiguousarray(mask, dtype=np.uint8)
    row_offsets, col_offsets = _lbp_offsets()
    status = library.hpaweb_lbp_histogram(
        padded.ctypes.data, cell.ctypes.data, grey.shape[0], grey.shape[1], _LBP_REACH_PX, LBP_POINTS,
        row_offsets.ctypes.data, col_offsets.ctypes.data, _lbp_table().ctypes.data, LBP_BINS,
        counts.ctypes.data,
    )  # fmt: skip
    if status != 0:
        raise MemoryError(f"The compiled LBP could not code a {grey.shape} crop at {LBP_POINTS} points.")
    return counts.astype(np.float64)


def _lbp_counts_numpy(grey: np.ndarray, mask: np.ndarray) -> np.ndarray:
    # Only the mask's box and the pixels within the radius around it (zero beyond the crop) matter.
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1)
    codes = _nri_uniform_lbp(grey, box)[mask[box[0] : box[1], box[2] : box[3]]]
    return np.bincount(codes, minlength=LBP_BINS)[:LBP_BINS].astype(np.float64)


_LBP_REACH_PX = int(np.ceil(LBP_RADIUS_PX))


@functools.cache
def _lbp_table() -> np.ndarray:
    """scikit-image's `nri_uniform` code of each of the 2^P patterns (bit i: neighbour i at least the centre).

    Uniform (at most 2 changes along neighbours 0 to P-1, as scikit-image counts them): 1 + (ones - 1) P
    + rotation; all zeros 0, all ones P (P - 1) + 1, the rest P (P - 1) + 2.
    """
    points = LBP_POINTS
    codes = np.arange(2**points, dtype=np.int64)
    bits = (codes[:, None] >> np.arange(points)) & 1
    changes = np.count_nonzero(bits[:, :-1] != bits[:, 1:], axis=1)
    ones = bits.sum(axis=1)
    first_one, first_zero = np.argmax(bits == 1, axis=1), np.argmax(bits == 0, axis=1)
    rotation = np.where(first_one == 0, ones - first_zero, points - first_one)
    table = np.where(changes <= 2, 1 + (ones - 1) * points + rotation, points * (points - 1) + 2)
    table[ones == 0] = 0
    table[ones == points] = points * (points - 1) + 1
    return table.astype(np.int64)  # int64: the compiled loop's table type, and an index for NumPy


@functools.cache
def _lbp_offsets() -> tuple[np.ndarray, np.ndarray]:
    """scikit-image's neighbour offsets (rows, columns), float64: round(-R sin a, 5), round(R cos a, 5)."""
    angles = 2 * np.pi * np.arange(LBP_POINTS, dtype=np.float64) / LBP_POINTS
    return np.round(-LBP_RADIUS_PX * np.sin(angles), 5), np.round(LBP_RADIUS_PX * np.cos(angles), 5)


@functools.cache
def compiled_lbp() -> ctypes.CDLL | None:
    """`_lbp.c`, compiled by `make venv` beside this file; None if not built (the NumPy code then
    gives the same histograms, several times slower and holding the GIL)."""
    pointer, size = ctypes.c_void_p, ctypes.c_int64
    # image, mask, rows, cols, reach, points, row and column offsets, code table, bins, histogram
    argtypes = [pointer, pointer, size, size, size, ctypes.c_int, pointer, pointer, pointer, size, pointer]
    return load_library(Path(__file__).with_name("_lbp.so"), "hpaweb_lbp_histogram", argtypes)


@functools.cache
def _lbp_neighbours(rows: int, cols: int) -> list:
    """Per neighbour: (row and column shifts of its 4 interpolation pixels, whether it falls on a pixel,
    the bilinear weights by row (rows, 1) and column (cols,)), computed as scikit-image does per pixel."""
    row_offsets, col_offsets = _lbp_offsets()
    r, c = np.arange(rows, dtype=np.float64), np.arange(cols, dtype=np.float64)
    neighbours = []
    for row_offset, col_offset in zip(row_offsets, col_offsets, strict=True):
        rr, cc = r + row_offset, c + col_offset
        low_r, high_r, low_c, high_c = np.floor(rr), np.ceil(rr), np.floor(cc), np.ceil(cc)
        dr, dc = (rr - low_r)[:, None], cc - low_c
        shifts = tuple(int(value[0] - base[0]) for value, base in ((low_r, r), (high_r, r), (low_c, c), (high_c, c)))
        neighbours.append((shifts, not dr.any() and not dc.any(), 1 - dr, dr, 1 - dc, dc))
    return neighbours


def _nri_uniform_lbp(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """scikit-image's `local_binary_pattern(image, 16, 2, "nri_uniform")` over `box` (top, bottom, left,
    right) of `image`, identical to it, computed for all pixels at once: the same bilinear interpolation
    (its weights depend on each pixel's position), in the same order of operations, compared to the
    centre, with zeros beyond the image (its constant mode)."""
    reach = _LBP_REACH_PX
    top, bottom, left, right = box
    padded = np.pad(image.astype(np.float64), reach)[top : bottom + 2 * reach, left : right + 2 * reach]
    rows, cols = bottom - top, right - left
    centre = padded[reach : reach + rows, reach : reach + cols]
    upper, lower, term = (np.empty((rows, cols)) for _ in range(3))
    code = np.zeros((rows, cols), dtype=np.uint16)
    bit = np.empty((rows, cols), dtype=bool)
    neighbours = _lbp_neighbours(*image.shape)
    for index, ((low_r, high_r, low_c, high_c), on_pixel, wr0, wr1, wc0, wc1) in enumerate(neighbours):
        low_r, high_r, low_c, high_c = low_r + reach, high_r + reach, low_c + reach, high_c + reach
        wr0, wr1, wc0, wc1 = wr0[top:bottom], wr1[top:bottom], wc0[left:right], wc1[left:right]
        top_left = padded[low_r : low_r + rows, low_c : low_c + cols]
        if on_pixel:
            texture = top_left
        else:
            np.multiply(wc0, top_left, out=upper)
            np.multiply(wc1, padded[low_r : low_r + rows, high_c : high_c + cols], out=term)
            upper += term
            np.multiply(wc0, padded[high_r : high_r + rows, low_c : low_c + cols], out=lower)
            np.multiply(wc1, padded[high_r : high_r + rows, high_c : high_c + cols], out=term)
            lower += term
            upper *= wr0
            lower *= wr1
            upper += lower
            texture = upper
        np.greater_equal(texture, centre, out=bit)  # texture - centre >= 0, for finite values
        code += bit.view(np.uint8) * np.uint16(1 << index)
    return _lbp_table()[code]


@functools.cache
def _wavelets() -> tuple:
    """kymatio's Morlet filter bank in the Fourier domain at `SCATTERING_SIZE_PX`: (filters (J L, S, S), scales (J L,))."""
    import torch
    from kymatio.scattering2d.filter_bank import filter_bank

    bank = filter_bank(SCATTERING_SIZE_PX, SCATTERING_SIZE_PX, SCATTERING_SCALES, L=SCATTERING_ORIENTATIONS)
    filters = torch.from_numpy(np.stack([psi["levels"][0] for psi in bank["psi"]]).astype(np.float32))
    scales = torch.tensor([psi["j"] for psi in bank["psi"]])
    return filters, scales


def scattering_features(greens: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
    """(N, 417) log mean scattering coefficients of (N, S, S) crops scaled to [0, 1], in batches.

    Every coefficient is averaged over the whole crop, which is what the scattering transform's
    final low-pass filter phi_J gives when it spans the crop, so the moduli are averaged at full
    resolution instead of being subsampled first: order 0 the crop's mean, order 1 the mean of
    |x * psi_(j1, l1)|, order 2 the mean of ||x * psi_(j1, l1)| * psi_(j2, l2)| for j2 > j1, with
    kymatio's Morlet wavelets (periodic convolutions by FFT in torch; the background is 0).
    """
    import torch

    count = len(greens)
    if count == 0:
        return np.zeros((0, SCATTERING_COEFFICIENTS))
    size = greens.shape[-1]
    if size != SCATTERING_SIZE_PX:
        greens = ndimage.zoom(greens, (1, SCATTERING_SIZE_PX / size, SCATTERING_SIZE_PX / size), order=1)
    filters, scales = _wavelets()
    rows = []
    with torch.inference_mode():
        for start in range(0, count, batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(greens[start : start + batch_size], dtype=np.float32))
            spectrum = torch.fft.fft2(batch)  # (B, S, S)
            first = torch.fft.ifft2(spectrum[:, None] * filters[None]).abs()  # (B, J L, S, S)
            orders = [batch.mean(dim=(-2, -1))[:, None], first.mean(dim=(-2, -1))]
            first_spectrum = torch.fft.fft2(first)
            for index in range(len(filters)):
                finer = scales > scales[index]
                if not finer.any():
                    continue
                second = torch.fft.ifft2(first_spectrum[:, index : index + 1] * filters[finer][None]).abs()
                orders.append(second.mean(dim=(-2, -1)))
            rows.append(torch.log(torch.cat(orders, dim=1) + 1e-6).numpy().astype(np.float64))
    return np.concatenate(rows)


def texture_crops(green: np.ndarray, cell_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(crops (N, S, S) each scaled to its cell, masks (N, S, S)) at `TEXTURE_SIZE_PX` from a field's
    green channel (H, W), cells in ascending id order."""
    slices = ndimage.find_objects(cell_labels)
    pairs = [
        texture_crop(green[box], cell_labels[box] == index + 1) for index, box in enumerate(slices) if box is not None
    ]
    if not pairs:
        size = TEXTURE_SIZE_PX
        return np.zeros((0, size, size), np.float32), np.zeros((0, size, size), bool)
    return np.stack([crop for crop, _ in pairs]), np.stack([mask for _, mask in pairs])


def texture_crop(green: np.ndarray, is_cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(crop (S, S) scaled to its cell, mask (S, S)) at `TEXTURE_SIZE_PX` of one cell from the green
    channel over its box and its mask there: as `ml.crops.crop_cells` crops, the mask cropped alike."""
    from ml.crops import place_resized

    size = TEXTURE_SIZE_PX
    planes = np.zeros((2, size, size), dtype=np.float32)
    place_resized(np.stack([green.astype(np.float32, copy=False) * is_cell, is_cell.astype(np.float32)]), planes)
    mask = planes[1] > 0.5
    return scaled_to_cell(planes[0], mask), mask


def crop_textures(crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(green crops scaled to their cells, masks) of classifier crops (N, 4, S, S), where a cell's
    pixels are those not zeroed by `ml.crops.crop_cells`."""
    masks = crops.sum(axis=1) > 0
    greens = [scaled_to_cell(crop[1], mask) for crop, mask in zip(crops, masks, strict=True)]
    return (np.stack(greens) if greens else np.zeros(masks.shape, np.float32)), masks
