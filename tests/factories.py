"""Small synthetic fields for tests: round nuclei in blue, cytoplasm around them in red and yellow."""

import io

import numpy as np
from PIL import Image

# Cell centres on a 256 px grid, scaled to the field size: nuclei of radius 18, cells of radius 50.
CENTRES_256 = ((64, 64), (64, 190), (190, 70), (185, 185))


def field_arrays(*, size_px: int = 512, bit_depth: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """Four channels of a field with one cell around each centre (scaled to size_px)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:size_px, 0:size_px]
    scale = size_px / 256
    blue = np.zeros((size_px, size_px), np.float32)
    cytoplasm = np.zeros_like(blue)
    green = np.zeros_like(blue)
    for row, col in CENTRES_256:
        distance = np.hypot(rows - row * scale, cols - col * scale)
        blue[distance < 18 * scale] = 0.8
        cytoplasm[distance < 50 * scale] = np.maximum(cytoplasm[distance < 50 * scale], 0.5)
        green[distance < 18 * scale] = 0.6
    noise = rng.normal(0, 0.02, blue.shape).astype(np.float32)
    channels = {"red": cytoplasm + noise, "green": green + noise, "blue": blue + noise, "yellow": cytoplasm * 0.8 + noise}
    top = 255 if bit_depth == 8 else 65535
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    return {name: (np.clip(image, 0, 1) * top).astype(dtype) for name, image in channels.items()}


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def field_pngs(**kwargs) -> dict[str, bytes]:
    return {name: png_bytes(image) for name, image in field_arrays(**kwargs).items()}
