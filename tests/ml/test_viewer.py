import numpy as np
import pytest

from ml.io import FieldImages
from ml.render import inner_boundaries
from ml.segmentation import Segmentation
from ml.viewer import (
    THUMBNAIL_CONTEXT_BRIGHTNESS,
    boundary_overlay,
    cell_thumbnails,
    decode_ids_rgb,
    downscale_labels,
    encode_ids_rgb,
    hpa_composite,
    viewer_images,
    viewer_shape,
)


def _two_cell_field(size_px: int = 64) -> tuple[FieldImages, Segmentation]:
    """Cell 1 fills the left half, cell 2 the right half; nucleus i is a square inside cell i."""
    cells = np.zeros((size_px, size_px), np.uint16)
    cells[:, : size_px // 2] = 1
    cells[:, size_px // 2 :] = 2
    nuclei = np.zeros_like(cells)
    quarter = size_px // 4
    nuclei[quarter : 2 * quarter, quarter // 2 : quarter] = 1
    nuclei[quarter : 2 * quarter, size_px - quarter : size_px - quarter // 2] = 2
    green = np.where(cells == 1, 0.8, 0.4).astype(np.float32)
    green[-size_px // 16 :] = 0.0  # a dark strip, so contrast stretching maps 0 -> 0 and 0.8 -> 255
    blue = (nuclei > 0).astype(np.float32)
    field = FieldImages(green=green, blue=blue)
    return field, Segmentation(nuclei_labels=nuclei, cell_labels=cells, backend="test", channels_used=("blue",))


def test_encode_ids_rgb_round_trips_ids_above_one_byte():
    labels = np.array([[0, 1, 255], [256, 4097, 65535]], dtype=np.uint16)
    rgb = encode_ids_rgb(labels)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 3, 3)
    assert rgb[1, 1].tolist() == [0, 16, 1]  # 4097 = 16 * 256 + 1
    assert np.array_equal(decode_ids_rgb(rgb), labels)


def test_encode_ids_rgb_is_the_three_low_bytes_high_first_for_any_integer_labels():
    rng = np.random.default_rng(0)
    for dtype in (np.int32, np.uint32, np.int64, np.uint16, np.uint8):
        labels = rng.integers(0, min(1 << 24, np.iinfo(dtype).max), (13, 7)).astype(dtype)
        ids = labels.astype(np.uint64)
        expected = np.stack([(ids >> 16) & 0xFF, (ids >> 8) & 0xFF, ids & 0xFF], axis=-1).astype(np.uint8)
        assert np.array_equal(encode_ids_rgb(labels), expected)
        assert np.array_equal(encode_ids_rgb(labels[:, ::2]), expected[:, ::2])  # not contiguous


def test_encode_ids_rgb_rejects_ids_that_do_not_fit_three_bytes():
    with pytest.raises(ValueError, match="2\\*\\*24"):
        encode_ids_rgb(np.array([[1 << 24]], dtype=np.uint32))
    with pytest.raises(ValueError, match="2\\*\\*24"):
        encode_ids_rgb(np.array([[-1]], dtype=np.int32))


def test_viewer_shape_never_enlarges_and_caps_the_longer_side():
    assert viewer_shape((512, 400), max_side_px=1536) == ((512, 400), 1.0)
    assert viewer_shape((3072, 2048), max_side_px=1536) == ((1536, 1024), 0.5)


def test_downscale_labels_samples_existing_labels_only():
    labels = np.arange(1, 17, dtype=np.uint16).reshape(4, 4)
    small = downscale_labels(labels, (2, 2))
    assert small.tolist() == [[6, 8], [14, 16]]


def test_boundary_overlay_is_opaque_on_the_inner_boundaries_only():
    labels = np.zeros((6, 6), np.uint16)
    labels[1:5, 1:5] = 3
    overlay = boundary_overlay(inner_boundaries(labels), (255, 255, 255))
    opaque = overlay[..., 3] == 255
    expected = np.zeros((6, 6), bool)
    expected[1:5, 1:5] = True
    expected[2:4, 2:4] = False
    assert np.array_equal(opaque, expected)
    assert overlay[1, 1].tolist() == [255, 255, 255, 255] and overlay[0, 0].tolist() == [0, 0, 0, 0]


def test_viewer_images_keep_a_small_field_at_full_resolution():
    field, segmentation = _two_cell_field(64)
    images = viewer_images(field, segmentation)
    assert images.scale == 1.0 and images.shape == (64, 64)
    assert sorted(images.channels) == ["blue", "green"]
    assert np.array_equal(decode_ids_rgb(images.cell_ids), segmentation.cell_labels)
    # Contrast-stretched between the dark strip and the bright left half.
    assert images.channels["green"][0, 0] == 255 and images.channels["green"][0, 63] == 128
    assert images.composite.shape == (64, 64, 3)


def test_viewer_images_downscale_a_large_field_to_the_maximum_side():
    field, segmentation = _two_cell_field(256)
    images = viewer_images(field, segmentation, max_side_px=64)
    assert images.scale == 0.25 and images.shape == (64, 64)
    assert all(channel.shape == (64, 64) for channel in images.channels.values())
    assert images.cell_boundaries.shape == images.nucleus_boundaries.shape == (64, 64)
    assert set(np.unique(decode_ids_rgb(images.cell_ids))) == {1, 2}


def test_cell_thumbnails_centre_each_cell_and_dim_its_neighbours():
    field, segmentation = _two_cell_field(64)
    images = viewer_images(field, segmentation)
    thumbnails = cell_thumbnails(
        images, cell_ids=np.array([1, 2]), bboxes=np.array([[0, 0, 64, 32], [0, 32, 64, 64]]), size_px=32
    )
    assert thumbnails.shape == (2, 32, 32, 3) and thumbnails.dtype == np.uint8
    # Cell 1's square spans columns -16..48: left quarter outside the image (black), its cell in the
    # middle (full green), the right quarter shows cell 2 dimmed.
    green = thumbnails[0, 16, :, 1]
    assert green[1] == 0 and green[12] == 255
    assert green[30] == round(128 * THUMBNAIL_CONTEXT_BRIGHTNESS)


def test_hpa_composite_adds_half_the_yellow_to_red_and_green_and_saturates():
    rng = np.random.default_rng(0)
    channels = {name: rng.integers(0, 256, (9, 11), dtype=np.uint8) for name in ("red", "green", "blue", "yellow")}
    as_float = {name: plane.astype(np.float32) for name, plane in channels.items()}
    expected = np.stack(
        [as_float["red"] + 0.5 * as_float["yellow"], as_float["green"] + 0.5 * as_float["yellow"], as_float["blue"]],
        axis=-1,
    )
    assert np.array_equal(hpa_composite(channels), np.clip(expected, 0, 255).astype(np.uint8))
    assert np.array_equal(hpa_composite({"green": channels["green"]})[..., 1], channels["green"])
