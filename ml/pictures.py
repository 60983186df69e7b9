"""The pictures a processed field stores, encoded to bytes: viewer images, label images, preview, thumbnails.

Channels, the preview and thumbnails are for looking at (the data stay in the uploaded files), so
they are JPEG; outlines, cell ids and labels must keep every pixel exact, so they are PNG.

`FieldPictures` makes and encodes them on threads of their own while the field is analysed, each
as soon as what it needs is there: the channels from the decoded field (beside segmentation, which
keeps one core busy), outlines, cell ids and label images from the segmentation, thumbnails from the
cells' boxes. Pillow and NumPy release the GIL for this work.
"""

import io
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ml.constants import CHANNELS
from ml.io import FieldImages, write_labels_png
from ml.render import CELL_OUTLINE_RGB, NUCLEUS_OUTLINE_RGB
from ml.segmentation import Segmentation
from ml.viewer import (
    VIEWER_MAX_SIDE_PX,
    ViewerImages,
    cell_thumbnails,
    viewer_channel,
    viewer_images_from_channels,
    viewer_shape,
)

PICTURE_THREADS = 1  # beside the main thread and the measurements': two cores kept busy, not oversubscribed
JPEG_QUALITY = 95
# The viewer's pictures by kind: a channel's name, or one of these.
CELL_OUTLINES = "cell-outlines"
NUCLEUS_OUTLINES = "nucleus-outlines"
CELL_IDS = "cell-ids"
VIEWER_KINDS: tuple[str, ...] = (*CHANNELS, CELL_OUTLINES, NUCLEUS_OUTLINES, CELL_IDS)


@dataclass(frozen=True)
class ViewerPicture:
    file_name: str  # `{kind}.jpg` or `{kind}.png`, as encoded
    data: bytes


@dataclass(frozen=True)
class EncodedPictures:
    viewer: dict[str, ViewerPicture]  # kind (`VIEWER_KINDS`) -> JPEG (channels) or PNG (outlines, cell ids)
    viewer_shape: tuple[int, int]  # (h, w) of the viewer pictures
    nuclei_labels: bytes  # 16-bit PNG
    cell_labels: bytes  # 16-bit PNG
    preview: bytes  # JPEG
    thumbnails: list[bytes]  # JPEG, one per cell given to `FieldPictures.cells`, in their order


class FieldPictures:
    """One field's pictures, made and encoded on `threads` threads as the analysis gives what each needs.

    Call `segmented` once the field is segmented, `cells` once its cells' boxes are known, then
    `result`; `close` stops the work of a field whose analysis failed. The threads take the work in
    the order it is handed over, so a picture that waits for another never waits for one not started.
    """

    def __init__(
        self, field: FieldImages, *, max_side_px: int = VIEWER_MAX_SIDE_PX, threads: int = PICTURE_THREADS
    ) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="pictures")
        out_shape, self._scale = viewer_shape(field.shape, max_side_px=max_side_px)
        self._channels = {
            name: self._pool.submit(viewer_channel, getattr(field, name), out_shape) for name in field.channels_present
        }
        self._channel_jpegs = {name: self._after(future, _jpeg_bytes) for name, future in self._channels.items()}
        self._viewer: Future[ViewerImages] | None = None
        self._thumbnails: Future[list[bytes]] | None = None

    def segmented(self, segmentation: Segmentation) -> None:
        """Start the pictures made from the segmentation: outlines, cell ids, preview and label images."""
        # The label images first: they need nothing else, so they fill the threads while the rest waits.
        self._nuclei_labels = self._pool.submit(_label_png_bytes, segmentation.nuclei_labels)
        self._cell_labels = self._pool.submit(_label_png_bytes, segmentation.cell_labels)
        viewer = self._viewer = self._pool.submit(self._viewer_images, segmentation)
        self._pngs = {
            CELL_OUTLINES: self._after(
                viewer, lambda images: _mask_png_bytes(images.cell_boundaries, CELL_OUTLINE_RGB)
            ),
            NUCLEUS_OUTLINES: self._after(
                viewer, lambda images: _mask_png_bytes(images.nucleus_boundaries, NUCLEUS_OUTLINE_RGB)
            ),
            CELL_IDS: self._after(viewer, lambda images: _png_bytes(images.cell_ids)),
        }
        self._preview = self._after(viewer, lambda images: _jpeg_bytes(images.composite))

    def cells(self, *, cell_ids: np.ndarray, bboxes: np.ndarray) -> None:
        """Start the cells' thumbnails; `bboxes` are (N, 4) half-open boxes in field pixels."""
        if self._viewer is None:
            raise RuntimeError("Hand over the segmentation (segmented) before the cells.")
        thumbnails = self._after(
            self._viewer, lambda viewer: cell_thumbnails(viewer, cell_ids=cell_ids, bboxes=bboxes.reshape(-1, 4))
        )
        self._thumbnails = self._after(thumbnails, lambda pixels: [_jpeg_bytes(thumbnail) for thumbnail in pixels])

    def result(self) -> tuple[ViewerImages, EncodedPictures]:
        """Wait for every picture; the first error any of them raised is raised here."""
        if self._viewer is None or self._thumbnails is None:
            raise RuntimeError("Hand over the segmentation and the cells before asking for the pictures.")
        try:
            viewer = self._viewer.result()
            encoded = EncodedPictures(
                viewer={
                    **{
                        name: ViewerPicture(f"{name}.jpg", future.result())
                        for name, future in self._channel_jpegs.items()
                    },
                    **{kind: ViewerPicture(f"{kind}.png", future.result()) for kind, future in self._pngs.items()},
                },
                viewer_shape=viewer.shape,
                nuclei_labels=self._nuclei_labels.result(),
                cell_labels=self._cell_labels.result(),
                preview=self._preview.result(),
                thumbnails=self._thumbnails.result(),
            )
        finally:
            self.close()
        return viewer, encoded

    def close(self) -> None:
        """Drop the pictures not started yet and wait for those running (a failed field's)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _viewer_images(self, segmentation: Segmentation) -> ViewerImages:
        channels = {name: future.result() for name, future in self._channels.items()}
        return viewer_images_from_channels(channels, segmentation, scale=self._scale)

    def _after(self, future: Future, function: Callable) -> Future:
        """`function(future.result())` on a thread of the pool, handed over after `future` was."""
        return self._pool.submit(lambda: function(future.result()))


def _png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    # zlib's run-length strategy: as fast as its lowest level on these flat images and smaller than its default.
    Image.fromarray(pixels).save(buffer, format="PNG", compress_type=zlib.Z_RLE)
    return buffer.getvalue()


def _jpeg_bytes(pixels: np.ndarray) -> bytes:
    """Pictures for people only (channels, preview, thumbnails): JPEG is several times faster to write than PNG."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def _mask_png_bytes(mask: np.ndarray, colour: tuple[int, int, int]) -> bytes:
    """An outline overlay as a 2-colour palette PNG: `colour` where `mask` is true, transparent elsewhere.

    Browsers show it exactly as the RGBA overlay, from a quarter of the bytes to compress.
    """
    image = Image.frombytes("P", (mask.shape[1], mask.shape[0]), np.ascontiguousarray(mask).view(np.uint8).tobytes())
    image.putpalette([0, 0, 0, *colour])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_type=zlib.Z_RLE, transparency=0)
    return buffer.getvalue()


def _label_png_bytes(labels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    write_labels_png(buffer, labels)
    return buffer.getvalue()
