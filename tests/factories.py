"""Small synthetic fields for tests (round nuclei in blue, cytoplasm around them in red and yellow),
and rows of the cells app made directly."""

import io

import numpy as np
from PIL import Image

from cells.models import Cell, Field, Job
from ml.constants import NUM_CLASSES
from ml.encoding import empty_rle
from ml.io import FieldImages, read_field

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
    channels = {
        "red": cytoplasm + noise,
        "green": green + noise,
        "blue": blue + noise,
        "yellow": cytoplasm * 0.8 + noise,
    }
    top = 255 if bit_depth == 8 else 65535
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    return {name: (np.clip(image, 0, 1) * top).astype(dtype) for name, image in channels.items()}


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def field_pngs(**kwargs) -> dict[str, bytes]:
    return {name: png_bytes(image) for name, image in field_arrays(**kwargs).items()}


def field_images(**kwargs) -> FieldImages:
    """The field of `field_pngs`, read by `ml.io` as a worker reads it."""
    return read_field({name: io.BytesIO(data) for name, data in field_pngs(**kwargs).items()})


# Rows, for reads that need no processed images.


def make_job(*, owner, name: str = "", segmentation_backend: str = "classical") -> Job:
    return Job.objects.create(owner=owner, name=name, segmentation_backend=segmentation_backend)


def make_field(
    *, job: Job, name: str = "f1", size_px: int = 64, status: str = Field.Status.QUEUED, progress: float = 0.0, **values
) -> Field:
    return Field.objects.create(
        job=job, name=name, width=size_px, height=size_px, bit_depth=8, status=status, progress=progress, **values
    )


def make_cell(*, field: Field, label: int, probabilities: list[float] | None = None, bbox=(0, 0, 10, 10)) -> Cell:
    """A cell row; its top class and confidence follow from `probabilities`, as processing stores them."""
    top_class = int(np.argmax(probabilities)) if probabilities else None
    return Cell.objects.create(
        field=field,
        label=label,
        min_row=bbox[0],
        min_col=bbox[1],
        max_row=bbox[2],
        max_col=bbox[3],
        area_px=(bbox[2] - bbox[0]) * (bbox[3] - bbox[1]),
        mask_rle=empty_rle(field.height, field.width),
        nucleus_rle=empty_rle(field.height, field.width),
        probabilities=probabilities,
        top_class=top_class,
        top_confidence=probabilities[top_class] if probabilities else None,
    )


def probabilities_peaking_at(class_index: int, *, peak: float = 0.9, rest: float = 0.01) -> list[float]:
    """19 class confidences: `peak` for one class, `rest` for every other."""
    values = [rest] * NUM_CLASSES
    values[class_index] = peak
    return values
