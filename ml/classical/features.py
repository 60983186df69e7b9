"""Texture features of classifier crops, by named set; training and serving both use `crop_features`."""

import numpy as np

from ml.measure.texture import (
    HARALICK_NAMES,
    LBP_BINS,
    SCATTERING_COEFFICIENTS,
    crop_textures,
    haralick_features,
    lbp_histogram,
    scattering_features,
)

FEATURE_SETS: tuple[str, ...] = ("lbp", "haralick", "scattering", "all")
FEATURE_COUNTS: dict[str, int] = {
    "lbp": LBP_BINS,
    "haralick": len(HARALICK_NAMES),
    "scattering": SCATTERING_COEFFICIENTS,
    "all": LBP_BINS + len(HARALICK_NAMES) + SCATTERING_COEFFICIENTS,
}


def crop_features(images: np.ndarray, feature_set: str) -> np.ndarray:
    """float64 (N, FEATURE_COUNTS[feature_set]) of crops (N, 4, S, S) in [0, 1] made by `ml.crops.crop_cells`."""
    if feature_set not in FEATURE_SETS:
        raise ValueError(f"Unknown feature set {feature_set!r}; choose one of {', '.join(FEATURE_SETS)}.")
    greens, masks = crop_textures(np.asarray(images, dtype=np.float32))
    parts = []
    if feature_set in ("lbp", "all"):
        parts.append(_per_cell(lbp_histogram, greens, masks, LBP_BINS))
    if feature_set in ("haralick", "all"):
        parts.append(_per_cell(haralick_features, greens, masks, len(HARALICK_NAMES)))
    if feature_set in ("scattering", "all"):
        parts.append(scattering_features(greens))
    features = np.concatenate(parts, axis=1)
    # An empty crop has no texture; 0 keeps the estimator's input finite.
    return np.nan_to_num(features, nan=0.0, posinf=0.0, neginf=0.0)


def _per_cell(function, greens: np.ndarray, masks: np.ndarray, width: int) -> np.ndarray:
    rows = [function(green, mask) for green, mask in zip(greens, masks, strict=True)]
    return np.array(rows, dtype=np.float64).reshape(len(greens), width)
