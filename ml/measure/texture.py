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
- LBP: scikit-image `local_binary_pattern` with P=16 neighbours on a circle of radius R=2 px,
  uniform patterns without rotation invariance (`nri_uniform`): P * (P - 1) + 3 = 243 bins,
  the histogram of the cell's pixels, summing to 1.
- Wavelet scattering (kymatio's Morlet filter bank, as its `Scattering2D` uses): the crop reduced
  to `SCATTERING_SIZE_PX` px, J=4 scales and L=8 orientations, second order:
  1 + J L + L^2 J (J - 1) / 2 = 417 coefficients, each averaged over the crop and log-compressed
  (log(1e-6 + mean)); computed for many cells at once (`scattering_features` takes a batch).
"""

import functools

import numpy as np
from scipy import ndimage
from skimage.feature import graycomatrix, graycoprops, local_binary_pattern

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
    levels = np.where(mask, 1 + np.minimum((green * (HARALICK_LEVELS - 1)).astype(np.int64), HARALICK_LEVELS - 2), 0)
    glcm = graycomatrix(
        levels.astype(np.uint8), [HARALICK_DISTANCE_PX], HARALICK_ANGLES, levels=HARALICK_LEVELS, symmetric=True
    ).astype(np.float64)
    glcm = glcm[1:, 1:]  # pairs with background left out
    totals = glcm.sum(axis=(0, 1), keepdims=True)
    if not totals.all():
        return np.full(len(HARALICK_NAMES), np.nan)
    glcm /= totals
    with np.errstate(invalid="ignore", divide="ignore"):
        features = [float(np.mean(graycoprops(glcm, prop))) for prop in _GRAYCOPROPS]
    features += _sum_difference_features(glcm)
    return np.asarray(features, dtype=np.float64)


def _sum_difference_features(glcm: np.ndarray) -> list[float]:
    """Sum average, sum entropy, difference variance, difference entropy (Haralick 1973), mean over angles."""
    levels = glcm.shape[0]
    i, j = np.indices((levels, levels))
    sums, differences = (i + j).ravel(), np.abs(i - j).ravel()
    results = []
    for angle in range(glcm.shape[3]):
        matrix = glcm[:, :, 0, angle].ravel()
        p_sum = np.bincount(sums, weights=matrix, minlength=2 * levels - 1)
        p_difference = np.bincount(differences, weights=matrix, minlength=levels)
        k_sum, k_difference = np.arange(len(p_sum)), np.arange(len(p_difference))
        difference_mean = float(np.sum(k_difference * p_difference))
        results.append(
            (
                float(np.sum(k_sum * p_sum)),
                _entropy(p_sum),
                float(np.sum((k_difference - difference_mean) ** 2 * p_difference)),
                _entropy(p_difference),
            )
        )
    return [float(value) for value in np.mean(results, axis=0)]


def _entropy(probabilities: np.ndarray) -> float:
    positive = probabilities[probabilities > 0]
    return float(-(positive * np.log(positive)).sum())


def lbp_histogram(green: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The 243-bin uniform LBP histogram (P=16, R=2) of the cell's pixels, summing to 1."""
    if not mask.any():
        return np.full(LBP_BINS, np.nan)
    # Integer grey levels, so flat regions give the same code however the floats round.
    codes = local_binary_pattern(
        np.round(green * 255).astype(np.uint8), LBP_POINTS, LBP_RADIUS_PX, method="nri_uniform"
    )
    histogram = np.bincount(codes[mask].astype(np.int64), minlength=LBP_BINS)[:LBP_BINS].astype(np.float64)
    return histogram / histogram.sum()


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
    from ml.crops import crop_cells

    # The second plane is all ones: cropped like the green one, it becomes the cell's mask at crop size.
    planes = np.stack([green.astype(np.float32, copy=False), np.ones(green.shape, dtype=np.float32)])
    images = crop_cells(planes, cell_labels, size_px=TEXTURE_SIZE_PX).images
    masks = images[:, 1] > 0.5
    scaled = [scaled_to_cell(crop, mask) for crop, mask in zip(images[:, 0], masks, strict=True)]
    return (np.stack(scaled) if scaled else images[:, 0]), masks


def crop_textures(crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(green crops scaled to their cells, masks) of classifier crops (N, 4, S, S), where a cell's
    pixels are those not zeroed by `ml.crops.crop_cells`."""
    masks = crops.sum(axis=1) > 0
    greens = [scaled_to_cell(crop[1], mask) for crop, mask in zip(crops, masks, strict=True)]
    return (np.stack(greens) if greens else np.zeros(masks.shape, np.float32)), masks
