"""Images for the field viewer: downscaled channels, outline overlays, a cell-id map and cell thumbnails.

A 3072 px field is too large to send to a browser four times over, so the viewer works on a
copy whose longer side is at most `max_side_px`. Every picture here is made from that copy, in
one pass over the full-resolution channels, so producing them costs little next to segmentation.
"""

from dataclasses import dataclass

import numpy as np
from PIL import Image

from ml.io import FieldImages
from ml.render import CELL_OUTLINE_RGB, NUCLEUS_OUTLINE_RGB, contrast_stretch_uint8, inner_boundaries
from ml.segmentation import Segmentation

VIEWER_MAX_SIDE_PX = 1536
THUMBNAIL_SIZE_PX = 128
# Neighbouring cells stay visible in a thumbnail, dimmed to this share, so the cell stands out.
THUMBNAIL_CONTEXT_BRIGHTNESS = 0.35


@dataclass(frozen=True, eq=False)
class ViewerImages:
    """A field's pictures at viewer resolution (h, w); `scale` = viewer px per field px."""

    channels: dict[str, np.ndarray]  # uint8 (h, w) per channel present, contrast-stretched
    cell_labels: np.ndarray  # uint16 (h, w), nearest-neighbour copy of the field's cell labels
    cell_boundaries: np.ndarray  # bool (h, w): the inner boundary of every cell
    nucleus_boundaries: np.ndarray  # bool (h, w): the inner boundary of every nucleus
    cell_ids: np.ndarray  # uint8 (h, w, 3): cell id = R * 65536 + G * 256 + B, 0 = background
    colours: np.ndarray  # uint8 (h, w, 3): HPA colouring of the channels
    composite: np.ndarray  # uint8 (h, w, 3): the colouring with both outlines drawn in
    scale: float

    @property
    def shape(self) -> tuple[int, int]:
        return self.cell_labels.shape


def viewer_shape(shape: tuple[int, int], *, max_side_px: int = VIEWER_MAX_SIDE_PX) -> tuple[tuple[int, int], float]:
    """((h, w), scale) of the viewer copy of an (H, W) field; fields that fit are not enlarged."""
    scale = min(1.0, max_side_px / max(shape))
    return (max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale))), scale


def downscale_channel(image: np.ndarray, out_shape: tuple[int, int]) -> np.ndarray:
    """float32 (H, W) -> float32 out_shape by area averaging (Pillow's box filter: fast, no aliasing)."""
    if image.shape == out_shape:
        return image.astype(np.float32, copy=False)
    resized = Image.fromarray(image.astype(np.float32, copy=False)).resize(
        (out_shape[1], out_shape[0]), Image.Resampling.BOX
    )
    return np.asarray(resized, dtype=np.float32)


def downscale_labels(labels: np.ndarray, out_shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour copy of an (H, W) label image: every value is a label that exists in the input."""
    if labels.shape == out_shape:
        return labels.copy()
    rows = np.minimum(
        ((np.arange(out_shape[0]) + 0.5) * labels.shape[0] / out_shape[0]).astype(np.intp), labels.shape[0] - 1
    )
    cols = np.minimum(
        ((np.arange(out_shape[1]) + 0.5) * labels.shape[1] / out_shape[1]).astype(np.intp), labels.shape[1] - 1
    )
    return labels.take(rows, axis=0).take(cols, axis=1)  # labels[np.ix_(rows, cols)], a third of its time


def encode_ids_rgb(labels: np.ndarray) -> np.ndarray:
    """(h, w) integer ids < 2**24 -> uint8 (h, w, 3) with id = R * 65536 + G * 256 + B."""
    if labels.size and (int(labels.max()) >= 1 << 24 or int(labels.min()) < 0):
        raise ValueError("Cell ids must be below 2**24 to fit three 8-bit colour planes.")
    if labels.dtype in (np.uint8, np.uint16):  # R is 0: the two bytes only, without a 32-bit copy
        ids = np.ascontiguousarray(labels, dtype="<u2").view(np.uint8).reshape(*labels.shape, 2)
        rgb = np.zeros((*labels.shape, 3), dtype=np.uint8)
        rgb[..., 1], rgb[..., 2] = ids[..., 1], ids[..., 0]
        return rgb
    ids = np.ascontiguousarray(labels, dtype="<u4")  # little-endian bytes: B, G, R, 0
    return ids.view(np.uint8).reshape(*ids.shape, 4)[..., 2::-1].copy()


def decode_ids_rgb(rgb: np.ndarray) -> np.ndarray:
    """The inverse of `encode_ids_rgb`: uint8 (h, w, 3) -> uint32 (h, w) ids."""
    planes = rgb.astype(np.uint32)
    return (planes[..., 0] << 16) | (planes[..., 1] << 8) | planes[..., 2]


def boundary_overlay(boundaries: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """uint8 (h, w, 4) RGBA, as a browser shows an outline picture (`ml.pictures`): `colour`, opaque
    where `boundaries` (bool (h, w)) is true, transparent elsewhere."""
    overlay = np.zeros((*boundaries.shape, 4), dtype=np.uint8)
    overlay[boundaries] = (*colour, 255)
    return overlay


def viewer_channel(image: np.ndarray, out_shape: tuple[int, int]) -> np.ndarray:
    """One channel as the viewer shows it: area-averaged down to `out_shape`, contrast-stretched to uint8."""
    return contrast_stretch_uint8(downscale_channel(image, out_shape))


def hpa_composite(channels: dict[str, np.ndarray]) -> np.ndarray:
    """HPA colouring of uint8 channels: red = microtubules, green = protein, blue = nucleus, yellow adds to red and green."""
    shape = next(iter(channels.values())).shape
    zeros = np.zeros(shape, dtype=np.uint16)
    red, green, blue, yellow = (
        channels[name].astype(np.uint16) if name in channels else zeros for name in ("red", "green", "blue", "yellow")
    )
    half_yellow = yellow >> 1  # integer halving: floor(x + 0.5 y) for integer x, as the float formula truncated
    rgb = np.empty((*shape, 3), dtype=np.uint8)
    rgb[..., 0] = np.minimum(red + half_yellow, 255)
    rgb[..., 1] = np.minimum(green + half_yellow, 255)
    rgb[..., 2] = blue
    return rgb


def viewer_images(
    field: FieldImages, segmentation: Segmentation, *, max_side_px: int = VIEWER_MAX_SIDE_PX
) -> ViewerImages:
    """Every viewer picture of a field and its segmentation, in one call (`ml.pictures.FieldPictures`
    makes the same pictures stage by stage, beside the analysis)."""
    out_shape, scale = viewer_shape(field.shape, max_side_px=max_side_px)
    channels = {name: viewer_channel(getattr(field, name), out_shape) for name in field.channels_present}
    return viewer_images_from_channels(channels, segmentation, scale=scale)


def viewer_images_from_channels(
    channels: dict[str, np.ndarray], segmentation: Segmentation, *, scale: float
) -> ViewerImages:
    """The viewer pictures from the field's `viewer_channel`s (all of one shape) and its segmentation."""
    out_shape = next(iter(channels.values())).shape
    cell_labels = downscale_labels(segmentation.cell_labels, out_shape)
    cell_boundaries = inner_boundaries(cell_labels)
    nucleus_boundaries = inner_boundaries(downscale_labels(segmentation.nuclei_labels, out_shape))
    colours = hpa_composite(channels)
    composite = colours.copy()
    pixels = composite.reshape(-1, 3)  # by flat index: a few percent of the pixels, faster than a mask
    pixels[np.flatnonzero(cell_boundaries)] = CELL_OUTLINE_RGB
    pixels[np.flatnonzero(nucleus_boundaries)] = NUCLEUS_OUTLINE_RGB  # drawn over the cells' where they meet
    return ViewerImages(
        channels=channels,
        cell_labels=cell_labels,
        cell_boundaries=cell_boundaries,
        nucleus_boundaries=nucleus_boundaries,
        cell_ids=encode_ids_rgb(cell_labels),
        colours=colours,
        composite=composite,
        scale=scale,
    )


def cell_thumbnails(
    images: ViewerImages, *, cell_ids: np.ndarray, bboxes: np.ndarray, size_px: int = THUMBNAIL_SIZE_PX
) -> np.ndarray:
    """uint8 (N, size_px, size_px, 3): each cell centred in a square, its neighbours dimmed.

    `bboxes` are (N, 4) half-open (min_row, min_col, max_row, max_col) in field pixels.
    """
    height, width = images.shape
    thumbnails = np.zeros((len(cell_ids), size_px, size_px, 3), dtype=np.uint8)
    colours = Image.fromarray(images.colours)  # without the outlines the composite has drawn in
    # Neighbours dimmed once for the field, each level rounded as float32, as a float square of the cell would be.
    dim_levels = (np.arange(256) * THUMBNAIL_CONTEXT_BRIGHTNESS).astype(np.float32).round().astype(np.uint8)
    dimmed = colours.point(dim_levels.tolist() * 3)
    for index, (cell_id, bbox) in enumerate(zip(cell_ids, bboxes, strict=True)):
        top, left = int(np.floor(bbox[0] * images.scale)), int(np.floor(bbox[1] * images.scale))
        bottom = min(height, max(top + 1, int(np.ceil(bbox[2] * images.scale))))
        right = min(width, max(left + 1, int(np.ceil(bbox[3] * images.scale))))
        side = max(bottom - top, right - left)
        # The square around the box, clipped to the image; the part outside stays black.
        row0, col0 = (top + bottom - side) // 2, (left + right - side) // 2
        rows = slice(max(row0, 0), min(row0 + side, height))
        cols = slice(max(col0, 0), min(col0 + side, width))
        box = (cols.start, rows.start, cols.stop, rows.stop)
        is_cell = (images.cell_labels[rows, cols] == cell_id).view(np.uint8) * np.uint8(255)
        window = dimmed.crop(box)
        window.paste(colours.crop(box), (0, 0), Image.fromarray(is_cell))  # Pillow's uint8 work beats NumPy's here
        square = Image.new("RGB", (side, side))
        square.paste(window, (cols.start - col0, rows.start - row0))
        thumbnails[index] = np.asarray(square.resize((size_px, size_px), Image.Resampling.BILINEAR))
    return thumbnails
