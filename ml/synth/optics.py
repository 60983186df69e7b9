"""What the microscope does to a painted field: blur, per-channel gain, camera offset, shot and read noise."""

import numpy as np
from scipy import ndimage as ndi


def apply_optics(rng: np.random.Generator, image: np.ndarray, scale: float) -> None:
    """Blur, gain, offset and noise on every plane of `image` (C, H, W), in place; values end in [0, 1]."""
    blur = rng.uniform(0.8, 1.8) * max(scale, 0.5)
    for channel in range(image.shape[0]):
        plane = ndi.gaussian_filter(image[channel], blur, truncate=3.0)
        plane *= rng.uniform(0.8, 1.2)
        plane += rng.uniform(0.005, 0.03)
        noise = rng.standard_normal(plane.shape, dtype=np.float32)
        plane += noise * (0.006 + 0.03 * np.sqrt(plane))  # read noise, then shot noise growing with the signal
        np.clip(plane, 0.0, 1.0, out=image[channel])
