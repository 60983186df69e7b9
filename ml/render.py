"""Pictures for people: a channel composite with cell and nucleus outlines."""

import numpy as np
from skimage.transform import resize

from ml.io import FieldImages
from ml.segmentation import Segmentation

CELL_OUTLINE_RGB = (255, 255, 255)
NUCLEUS_OUTLINE_RGB = (0, 255, 255)


PERCENTILE_SAMPLE_PX = 512 * 512


def _stretch_limits(image: np.ndarray, low_percentile: float, high_percentile: float) -> tuple[float, float]:
    """The two percentiles, from a regular grid of about 512 x 512 pixels: the same contrast to
    the eye, at a fraction of the cost on a large field."""
    step = max(1, int(np.sqrt(image.size / PERCENTILE_SAMPLE_PX)))
    low, high = np.percentile(image[::step, ::step], [low_percentile, high_percentile])
    return float(low), float(high)


def contrast_stretch(image: np.ndarray, *, low_percentile: float = 1.0, high_percentile: float = 99.8) -> np.ndarray:
    """Scale to [0, 1] between two percentiles, so dim 16-bit channels are visible."""
    low, high = _stretch_limits(image, low_percentile, high_percentile)
    if high <= low:
        return np.zeros_like(image, dtype=np.float32)
    return np.clip((image - low) / (high - low), 0.0, 1.0).astype(np.float32)


def contrast_stretch_uint8(
    image: np.ndarray, *, low_percentile: float = 1.0, high_percentile: float = 99.8
) -> np.ndarray:
    """`contrast_stretch` scaled to 0..255 and rounded to uint8, computed in place on one copy."""
    low, high = _stretch_limits(image, low_percentile, high_percentile)
    if high <= low:
        return np.zeros(image.shape, dtype=np.uint8)
    out = image.astype(np.float32, copy=True)
    out -= low
    out *= 255.0 / (high - low)
    np.clip(out, 0.0, 255.0, out=out)
    out += 0.5
    return out.astype(np.uint8)


def inner_boundaries(labels: np.ndarray) -> np.ndarray:
    """bool (h, w): labelled pixels with a 4-neighbour of another value.

    The same pixels as `skimage.segmentation.find_boundaries(labels, mode="inner")`, from four
    shifted comparisons instead of a grey dilation and erosion (several times faster).
    """
    differs = np.zeros(labels.shape, dtype=bool)
    vertical = labels[1:] != labels[:-1]
    differs[1:] |= vertical
    differs[:-1] |= vertical
    horizontal = labels[:, 1:] != labels[:, :-1]
    differs[:, 1:] |= horizontal
    differs[:, :-1] |= horizontal
    return differs & (labels != 0)


def composite_rgb(field: FieldImages, *, max_side_px: int = 1024) -> np.ndarray:
    """HPA colouring: red = microtubules, green = protein, blue = nucleus, yellow adds to red and green."""
    scale = min(1.0, max_side_px / max(field.shape))
    out_shape = (max(1, round(field.shape[0] * scale)), max(1, round(field.shape[1] * scale)))

    def channel(image: np.ndarray | None) -> np.ndarray:
        if image is None:
            return np.zeros(out_shape, dtype=np.float32)
        small = resize(image, out_shape, order=1, anti_aliasing=scale < 1.0, preserve_range=True)
        return contrast_stretch(small)

    red, green, blue, yellow = (channel(field.red), channel(field.green), channel(field.blue), channel(field.yellow))
    rgb = np.stack([red + 0.5 * yellow, green + 0.5 * yellow, blue], axis=-1)
    return (np.clip(rgb, 0.0, 1.0) * 255).astype(np.uint8)


def render_preview(field: FieldImages, segmentation: Segmentation, *, max_side_px: int = 1024) -> np.ndarray:
    """The composite with every cell outlined (white) and every nucleus outlined (cyan), uint8 (h, w, 3)."""
    rgb = composite_rgb(field, max_side_px=max_side_px)
    out_shape = rgb.shape[:2]
    for labels, colour in (
        (segmentation.cell_labels, CELL_OUTLINE_RGB),
        (segmentation.nuclei_labels, NUCLEUS_OUTLINE_RGB),
    ):
        small = resize(labels, out_shape, order=0, preserve_range=True, anti_aliasing=False).astype(labels.dtype)
        rgb[inner_boundaries(small)] = colour
    return rgb
