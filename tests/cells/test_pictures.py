"""The pictures of a processed field, encoded: JPEG where people only look, exact PNG where pixels are data."""

import dataclasses
import io

import numpy as np
import pytest
from PIL import Image

from cells.pictures import JPEG_QUALITY, encode_pictures
from ml.io import read_labels_png
from ml.pipeline import analyse_field
from ml.segmentation import Segmenter
from ml.viewer import THUMBNAIL_SIZE_PX, viewer_images
from tests.factories import field_images


@pytest.fixture(scope="module")
def analysed():
    """(result, viewer images) of a 256 px field of 4 cells, segmented without a classifier."""
    images = field_images(size_px=256)
    result = analyse_field(images, segmenter=Segmenter("classical"), predictor=None)
    return result, viewer_images(images, result.segmentation)


@pytest.fixture(scope="module")
def pictures(analysed):
    result, viewer = analysed
    return encode_pictures(result=result, viewer=viewer)


def _image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_channels_are_jpeg_and_outlines_and_cell_ids_are_png_named_by_their_format(pictures):
    names = {kind: picture.file_name for kind, picture in pictures.viewer.items()}
    assert names == {
        "red": "red.jpg", "green": "green.jpg", "blue": "blue.jpg", "yellow": "yellow.jpg",
        "cell-outlines": "cell-outlines.png", "nucleus-outlines": "nucleus-outlines.png", "cell-ids": "cell-ids.png",
    }  # fmt: skip
    formats = {kind: _image(picture.data).format for kind, picture in pictures.viewer.items()}
    assert formats == {kind: "JPEG" if name.endswith(".jpg") else "PNG" for kind, name in names.items()}


def test_channel_jpegs_keep_the_viewer_pixels_closely(analysed, pictures):
    _, viewer = analysed
    decoded = np.asarray(_image(pictures.viewer["green"].data), dtype=np.int16)
    assert decoded.shape == viewer.channels["green"].shape == (256, 256)
    assert JPEG_QUALITY == 95
    assert np.abs(decoded - viewer.channels["green"]).mean() < 2.0  # of 255, on a noisy field


def test_outline_overlays_decode_to_exactly_the_rgba_overlay(analysed, pictures):
    _, viewer = analysed
    for kind, overlay in (("cell-outlines", viewer.cell_outlines), ("nucleus-outlines", viewer.nucleus_outlines)):
        image = _image(pictures.viewer[kind].data)
        assert image.mode == "P"  # a 2-colour palette: a quarter of the bytes of RGBA to compress
        assert np.array_equal(np.asarray(image.convert("RGBA")), overlay), kind


def test_cell_ids_and_label_images_are_exact(analysed, pictures):
    result, viewer = analysed
    assert np.array_equal(np.asarray(_image(pictures.viewer["cell-ids"].data)), viewer.cell_ids)
    assert np.array_equal(read_labels_png(io.BytesIO(pictures.cell_labels)), result.segmentation.cell_labels)
    assert np.array_equal(read_labels_png(io.BytesIO(pictures.nuclei_labels)), result.segmentation.nuclei_labels)


def test_preview_and_one_thumbnail_per_cell_are_jpeg(analysed, pictures):
    result, viewer = analysed
    preview = _image(pictures.preview)
    assert (preview.format, preview.size, preview.mode) == ("JPEG", (256, 256), "RGB")
    assert len(pictures.thumbnails) == len(result.cells) == 4
    for thumbnail in pictures.thumbnails:
        image = _image(thumbnail)
        assert (image.format, image.size) == ("JPEG", (THUMBNAIL_SIZE_PX, THUMBNAIL_SIZE_PX))


def test_an_outline_overlay_of_two_colours_is_refused(analysed):
    result, viewer = analysed
    overlay = viewer.cell_outlines.copy()
    drawn = np.argwhere(overlay[..., 3] > 0)
    overlay[tuple(drawn[0])] = (1, 2, 3, 255)
    with pytest.raises(ValueError, match="^An outline overlay must have a single colour.$"):
        encode_pictures(result=result, viewer=dataclasses.replace(viewer, cell_outlines=overlay))
