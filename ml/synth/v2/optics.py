"""What the microscope and camera do to a v2 field, per channel, in place; values end in [0, 1].

- uneven illumination: a smooth vignette and tilt shared by the channels, up to 35 % darker corners;
- the point-spread function: a Gaussian blur, plus out-of-focus haze (a wide blur of the signal);
- per-channel gain (dim and bright fields) and camera offset: some fields keep a visible offset,
  others had it subtracted, so their background sits at 0 with noise clipped away;
- shot noise growing with the signal and Gaussian read noise.
"""

import numpy as np
from scipy import ndimage as ndi


def illumination(rng: np.random.Generator, size_px: int) -> np.ndarray:
    """A smooth multiplicative field (float32 (H, W)) in (0.6, 1.1]: vignette plus a linear tilt."""
    ys, xs = np.ogrid[:size_px, :size_px]
    centre = rng.uniform(0.3, 0.7, 2) * size_px
    r2 = ((ys - centre[0]) ** 2 + (xs - centre[1]) ** 2) / (0.5 * size_px) ** 2
    vignette = 1.0 - rng.uniform(0.0, 0.25) * r2
    tilt_angle = rng.uniform(0, 2 * np.pi)
    tilt = 1.0 + rng.uniform(0.0, 0.1) * (
        (ys / size_px - 0.5) * np.sin(tilt_angle) + (xs / size_px - 0.5) * np.cos(tilt_angle)
    )
    return np.clip(vignette * tilt, 0.6, 1.1).astype(np.float32)


def apply_optics(rng: np.random.Generator, image: np.ndarray, scale: float, gains: np.ndarray) -> None:
    """Blur, haze, illumination, `gains` (one per channel), offset and noise on `image` (C, H, W)."""
    size_px = image.shape[-1]
    light = illumination(rng, size_px)
    blur = rng.uniform(0.7, 1.5) * max(scale, 0.5)
    haze_sigma = 40.0 * scale + 2.0
    offset_kept = rng.random() < 0.3
    for channel in range(image.shape[0]):
        plane = ndi.gaussian_filter(image[channel], blur, truncate=3.0)
        small = plane[::8, ::8]
        haze = ndi.zoom(ndi.gaussian_filter(small, haze_sigma / 8), 8, order=1, grid_mode=True, mode="nearest")
        plane += rng.uniform(0.02, 0.12) * haze[:size_px, :size_px]
        plane *= light * gains[channel] * rng.uniform(0.9, 1.1)
        offset = rng.uniform(0.003, 0.025) if offset_kept else rng.uniform(-0.015, 0.002)
        plane += offset
        noise = rng.standard_normal(plane.shape, dtype=np.float32)
        read = rng.uniform(0.002, 0.01)
        shot = rng.uniform(0.01, 0.04)
        plane += noise * (read + shot * np.sqrt(np.maximum(plane, 0.0)))
        np.clip(plane, 0.0, 1.0, out=image[channel])
