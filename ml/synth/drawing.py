"""Drawing primitives the channels are painted with: shared textures, Gaussian spots and lines,
smooth random walks and random points inside a region."""

import math

import numpy as np
from scipy import ndimage as ndi


class Textures:
    """Smooth random fields shared by all cells of a field (sliced per cell, drawn once), float32 (H, W)."""

    def __init__(self, rng: np.random.Generator, size_px: int, scale: float) -> None:
        # Band-pass noise whose zero crossings form a reticular network (ER); drawn at half
        # resolution, which is fine enough for 6 px meshes and four times cheaper.
        half = (size_px + 1) // 2
        fine = ndi.gaussian_filter(rng.standard_normal((half, half), dtype=np.float32), 1.5 * scale + 0.3)
        coarse = ndi.gaussian_filter(fine, 3.0 * scale + 0.3)
        band = fine - coarse
        band /= band.std() + 1e-6
        fine /= fine.std() + 1e-6
        self.network = _upsample2(np.exp(-((band / 0.45) ** 2)), size_px)  # ~1 on the mesh, ~0 between
        self.grain = _upsample2(np.clip(0.5 + 0.25 * fine, 0.0, 1.0), size_px)  # around 0.5, in [0, 1]


def _upsample2(image: np.ndarray, size_px: int) -> np.ndarray:
    return ndi.zoom(image, 2, order=1, grid_mode=True, mode="nearest")[:size_px, :size_px]


def splat(shape: tuple[int, int], ys: np.ndarray, xs: np.ndarray, sigma: float, *, lines: bool) -> np.ndarray:
    """Gaussian spots (or lines drawn as 1 px steps) with a peak of about 1."""
    ys, xs = np.round(ys).astype(np.int64), np.round(xs).astype(np.int64)
    valid = (ys >= 0) & (ys < shape[0]) & (xs >= 0) & (xs < shape[1])
    ys, xs = ys[valid], xs[valid]
    result = np.zeros(shape, dtype=np.float32)
    if len(ys) == 0:
        return result
    # Filter only the box around the points (plus the kernel's reach): most patterns are compact.
    reach = int(math.ceil(3 * sigma)) + 1
    r0, c0 = max(0, ys.min() - reach), max(0, xs.min() - reach)
    r1, c1 = min(shape[0], ys.max() + reach + 1), min(shape[1], xs.max() + reach + 1)
    box_shape = (r1 - r0, c1 - c0)
    canvas = np.bincount((ys - r0) * box_shape[1] + (xs - c0), minlength=box_shape[0] * box_shape[1])
    canvas = ndi.gaussian_filter(canvas.reshape(box_shape).astype(np.float32), sigma, truncate=3.0)
    canvas *= math.sqrt(2 * math.pi) * sigma if lines else 2 * math.pi * sigma**2
    result[r0:r1, c0:c1] = np.minimum(canvas, 1.5)
    return result


def walks(
    rng: np.random.Generator, starts: np.ndarray, angles: np.ndarray, length_px: np.ndarray, turn_sd: float
) -> tuple[np.ndarray, np.ndarray]:
    """Points every 1 px along smooth random walks (one per start); shorter walks are cut."""
    steps = int(np.ceil(length_px.max())) if len(length_px) else 0
    if steps == 0:
        return np.zeros(0), np.zeros(0)
    heading = angles[:, None] + np.cumsum(rng.normal(0, turn_sd, (len(starts), steps)), axis=1)
    ys = starts[:, :1] + np.cumsum(np.sin(heading), axis=1)
    xs = starts[:, 1:] + np.cumsum(np.cos(heading), axis=1)
    keep = np.arange(steps)[None, :] < length_px[:, None]
    return ys[keep], xs[keep]


def sample_points(
    rng: np.random.Generator, region: np.ndarray, count: int, weight: np.ndarray | None = None
) -> np.ndarray:
    """`count` random positions (y, x), shape (count, 2), inside a boolean region, optionally weighted."""
    candidates = np.flatnonzero(region)
    if len(candidates) == 0 or count == 0:
        return np.zeros((0, 2))
    p = None
    if weight is not None:
        p = weight.ravel()[candidates].astype(np.float64)
        p /= p.sum()
    picked = rng.choice(candidates, size=count, p=p)
    ys, xs = np.unravel_index(picked, region.shape)
    return np.stack([ys, xs], axis=1) + rng.uniform(-0.5, 0.5, (count, 2))
