"""The pictures of a processed field, encoded: JPEG where people only look, exact PNG where pixels are data."""

import dataclasses
import io

import numpy as np
import pytest
from PIL import Image

from ml.crops import cell_boxes
from ml.io import read_labels_png
from ml.pictures import JPEG_QUALITY, VIEWER_KINDS, FieldPictures
from ml.pipeline import analyse_field
from ml.render import CELL_OUTLINE_RGB, NUCLEUS_OUTLINE_RGB
from ml.segmentation import Segmenter
from ml.viewer import THUMBNAIL_SIZE_PX, boundary_overlay, cell_thumbnails, viewer_images
from tests.factories import field_images


@pytest.fixture(scope="module")
def analysed():
    """(result, viewer images) of a 256 px field of 4 cells, segmented without a classifier."""
    images = field_images(size_px=256)
    result = analyse_field(images, segmenter=Segmenter("classical"), predictor=None, viewer=True)
    return result, result.viewer


@pytest.fixture(scope="module")
def pictures(analysed):
    result, _ = analysed
    return result.pictures


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
    for kind, overlay in (
        ("cell-outlines", boundary_overlay(viewer.cell_boundaries, CELL_OUTLINE_RGB)),
        ("nucleus-outlines", boundary_overlay(viewer.nucleus_boundaries, NUCLEUS_OUTLINE_RGB)),
    ):
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


def test_the_pictures_made_beside_the_analysis_are_those_made_at_once(analysed, pictures):
    result, viewer = analysed
    images = field_images(size_px=256)
    cell_ids, bboxes, _ = cell_boxes(result.segmentation.cell_labels)
    at_once = FieldPictures(images)  # handed everything at once, nothing to overlap
    at_once.segmented(result.segmentation)
    at_once.cells(cell_ids=cell_ids, bboxes=bboxes)
    at_once, encoded = at_once.result()
    expected = viewer_images(images, result.segmentation)
    for name in ("cell_labels", "cell_boundaries", "nucleus_boundaries", "cell_ids", "colours", "composite"):
        assert np.array_equal(getattr(viewer, name), getattr(expected, name)), name
        assert np.array_equal(getattr(at_once, name), getattr(expected, name)), name
    assert encoded == pictures
    thumbnails = cell_thumbnails(expected, cell_ids=cell_ids, bboxes=bboxes)
    for data, thumbnail in zip(pictures.thumbnails, thumbnails, strict=True):
        assert np.abs(np.asarray(_image(data), dtype=np.int16) - thumbnail).mean() < 3.0


def test_a_picture_that_fails_fails_the_result_and_stops_the_threads(analysed):
    result, _ = analysed
    images = field_images(size_px=256)
    pictures = FieldPictures(images)
    too_many = result.segmentation.cell_labels.astype(np.uint32) << 24  # ids that do not fit the RGB id map
    pictures.segmented(dataclasses.replace(result.segmentation, cell_labels=too_many))
    pictures.cells(cell_ids=np.array([1 << 24]), bboxes=np.array([[0, 0, 8, 8]]))
    with pytest.raises(ValueError, match="2\\*\\*24"):
        pictures.result()
    with pytest.raises(RuntimeError):  # the pool is shut down
        pictures.segmented(result.segmentation)


def test_pictures_need_the_segmentation_and_the_cells_first():
    pictures = FieldPictures(field_images(size_px=64))
    with pytest.raises(RuntimeError, match="segmentation"):
        pictures.cells(cell_ids=np.array([1]), bboxes=np.array([[0, 0, 8, 8]]))
    with pytest.raises(RuntimeError, match="segmentation and the cells"):
        pictures.result()
    pictures.close()


def test_viewer_kinds_are_the_stored_image_kinds():
    from cells.models import FieldImage

    assert set(VIEWER_KINDS) == set(FieldImage.Kind.values)
