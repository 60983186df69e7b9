"""The pictures a processed field stores, encoded to bytes: viewer images, label images, preview, thumbnails.

Channels, the preview and thumbnails are for looking at (the data stay in the uploaded files), so
they are JPEG; outlines, cell ids and labels must keep every pixel exact, so they are PNG.
"""

import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from cells.models import FieldImage
from ml.constants import CHANNELS
from ml.io import write_labels_png
from ml.pipeline import FieldResult
from ml.viewer import ViewerImages, cell_thumbnails

# Pillow releases the GIL while it compresses, so a field's pictures are encoded side by side.
PICTURE_THREADS = 4
JPEG_QUALITY = 95


@dataclass(frozen=True)
class ViewerPicture:
    file_name: str  # `{kind}.jpg` or `{kind}.png`, as encoded
    data: bytes


@dataclass(frozen=True)
class EncodedPictures:
    viewer: dict[str, ViewerPicture]  # FieldImage kind -> JPEG (channels) or PNG (outlines, cell ids)
    nuclei_labels: bytes  # 16-bit PNG
    cell_labels: bytes  # 16-bit PNG
    preview: bytes  # JPEG
    thumbnails: list[bytes]  # JPEG, one per cell of the result, in its order


def encode_pictures(*, result: FieldResult, viewer: ViewerImages) -> EncodedPictures:
    """Every picture a processed field stores, encoded on `PICTURE_THREADS` threads."""
    viewer_jobs = {
        # JPEG, as image servers such as OMERO render channels: about 20 times faster to write than
        # PNG and half the size.
        **{kind: (_jpeg_bytes, viewer.channels[kind], "jpg") for kind in CHANNELS if kind in viewer.channels},
        FieldImage.Kind.CELL_OUTLINES: (_overlay_png_bytes, viewer.cell_outlines, "png"),
        FieldImage.Kind.NUCLEUS_OUTLINES: (_overlay_png_bytes, viewer.nucleus_outlines, "png"),
        FieldImage.Kind.CELL_IDS: (_png_bytes, viewer.cell_ids, "png"),
    }
    with ThreadPoolExecutor(max_workers=PICTURE_THREADS) as pool:
        # The thumbnails are drawn while the larger pictures compress.
        thumbnails = pool.submit(
            cell_thumbnails,
            viewer,
            cell_ids=np.array([cell.cell_id for cell in result.cells], dtype=np.int64),
            bboxes=np.array([cell.bbox for cell in result.cells], dtype=np.int64).reshape(-1, 4),
        )
        viewer_futures = {
            kind: (f"{kind}.{extension}", pool.submit(encode, pixels))
            for kind, (encode, pixels, extension) in viewer_jobs.items()
        }
        nuclei_labels = pool.submit(_label_png_bytes, result.segmentation.nuclei_labels)
        cell_labels = pool.submit(_label_png_bytes, result.segmentation.cell_labels)
        preview = pool.submit(_jpeg_bytes, viewer.composite)
        thumbnail_bytes = list(pool.map(_jpeg_bytes, thumbnails.result()))
        return EncodedPictures(
            viewer={
                kind: ViewerPicture(file_name=file_name, data=future.result())
                for kind, (file_name, future) in viewer_futures.items()
            },
            nuclei_labels=nuclei_labels.result(),
            cell_labels=cell_labels.result(),
            preview=preview.result(),
            thumbnails=thumbnail_bytes,
        )


def _png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    # Level 3: close to the default's size at a fraction of its time.
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def _jpeg_bytes(pixels: np.ndarray) -> bytes:
    """Pictures for people only (preview, thumbnails): JPEG is several times faster to write than PNG."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def _overlay_png_bytes(overlay: np.ndarray) -> bytes:
    """An RGBA outline overlay of one colour as a 2-colour palette PNG, transparent where it is not drawn.

    Browsers show it exactly as the RGBA image, from a quarter of the bytes to compress.
    """
    drawn = overlay[..., 3] > 0
    first = int(np.argmax(drawn.ravel()))
    colour = overlay.reshape(-1, overlay.shape[-1])[first, :3] if drawn.ravel()[first] else np.zeros(3, np.uint8)
    # Every drawn pixel has the first one's colour (one comparison per plane, not a sort of the pixels).
    for plane, value in zip(np.moveaxis(overlay[..., :3], -1, 0), colour, strict=True):
        if np.any((plane != value) & drawn):
            raise ValueError("An outline overlay must have a single colour.")
    image = Image.frombytes("P", (overlay.shape[1], overlay.shape[0]), drawn.view(np.uint8).tobytes())
    image.putpalette([0, 0, 0, *colour.tolist()])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=3, transparency=0)
    return buffer.getvalue()


def _label_png_bytes(labels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    write_labels_png(buffer, labels)
    return buffer.getvalue()
