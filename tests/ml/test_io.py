import io
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from ml.io import (
    FieldImages,
    InputError,
    find_fields,
    read_channel,
    read_field,
    read_labels_png,
    read_multichannel_tiff,
    write_labels_png,
)


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a size but holds no pixel data: reading past the header would fail."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def rejects(message_start: str):
    """Expect an InputError whose message starts with these words."""
    return pytest.raises(InputError, match="^" + re.escape(message_start))


def write_png(path, pixels: np.ndarray):
    path.write_bytes(png_bytes(pixels))
    return path


def test_read_channel_scales_8bit_png_to_unit_range(tmp_path):
    path = write_png(tmp_path / "a_green.png", np.array([[0, 51], [255, 102]], dtype=np.uint8))
    image, bit_depth = read_channel(path, channel="green")
    assert bit_depth == 8
    assert image.dtype == np.float32
    np.testing.assert_array_equal(image, np.array([[0, 0.2], [1, 0.4]], dtype=np.float32))


def test_read_channel_scales_16bit_png_to_unit_range(tmp_path):
    path = write_png(tmp_path / "a_blue.png", np.array([[0, 13107], [65535, 26214]], dtype=np.uint16))
    image, bit_depth = read_channel(path, channel="blue")
    assert bit_depth == 16
    np.testing.assert_array_equal(image, np.array([[0, 0.2], [1, 0.4]], dtype=np.float32))


@pytest.mark.parametrize(("dtype", "bit_depth"), [(np.uint8, 8), (np.uint16, 16)])
def test_read_channel_reads_tiff(tmp_path, dtype, bit_depth):
    pixels = np.array([[0, 1], [2, np.iinfo(dtype).max]], dtype=dtype)
    tifffile.imwrite(tmp_path / "a_red.tif", pixels)
    image, depth = read_channel(tmp_path / "a_red.tif", channel="red")
    assert depth == bit_depth
    np.testing.assert_array_equal(image, pixels.astype(np.float32) / np.iinfo(dtype).max)


def test_read_channel_reads_compressed_big_endian_tiff(tmp_path):
    pixels = np.arange(12, dtype=">u2").reshape(3, 4) * 1000
    tifffile.imwrite(tmp_path / "a_red.tif", pixels, compression="zlib", byteorder=">")
    image, _ = read_channel(tmp_path / "a_red.tif", channel="red")
    np.testing.assert_array_equal(image, pixels.astype(np.float32) / 65535)


def test_read_channel_reads_file_objects():
    upload = io.BytesIO(png_bytes(np.full((3, 5), 255, dtype=np.uint8)))
    image, _ = read_channel(upload, channel="green")
    assert image.shape == (3, 5)
    assert image.min() == 1.0


def test_read_channel_keeps_the_single_non_empty_plane_of_rgb(tmp_path):
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[..., 1] = [[10, 20], [30, 40]]
    image, _ = read_channel(write_png(tmp_path / "a_green.png", rgb), channel="green")
    np.testing.assert_array_equal(image, np.array([[10, 20], [30, 40]], dtype=np.float32) / 255)


def test_read_channel_reduces_mixed_rgba_to_luminance(tmp_path):
    rgba = np.zeros((1, 2, 4), dtype=np.uint8)
    rgba[0, 0] = [100, 200, 50, 255]
    rgba[0, 1] = [255, 255, 255, 0]
    image, _ = read_channel(write_png(tmp_path / "a_green.png", rgba), channel="green")
    luminance = round(0.299 * 100 + 0.587 * 200 + 0.114 * 50)  # 153
    np.testing.assert_array_equal(image, np.array([[luminance, 255]], dtype=np.float32) / 255)


def test_read_channel_rejects_oversized_png_from_its_header(tmp_path):
    path = tmp_path / "big_green.png"
    path.write_bytes(png_header_only(5000, 300))
    with rejects("The green channel (big_green.png) is 5000 x 300 px; the largest accepted side is 4096 px. Downscale"):
        read_channel(path, channel="green")


def test_read_channel_honours_a_smaller_size_limit(tmp_path):
    path = write_png(tmp_path / "a_blue.png", np.zeros((10, 40), dtype=np.uint8))
    with rejects("The blue channel (a_blue.png) is 40 x 10 px; the largest accepted side is 32 px."):
        read_channel(path, channel="blue", max_side_px=32)


def test_read_channel_turns_decompression_bomb_into_input_error(tmp_path):
    path = tmp_path / "bomb_green.png"
    path.write_bytes(png_header_only(100_000, 100_000))
    with rejects("The green channel (bomb_green.png) claims to be too large to read safely"):
        read_channel(path, channel="green", max_side_px=200_000)


def test_read_channel_rejects_oversized_tiff_from_its_header(tmp_path):
    tifffile.imwrite(tmp_path / "wide_red.tif", np.zeros((2, 4100), dtype=np.uint8))
    with rejects("The red channel (wide_red.tif) is 4100 x 2 px;"):
        read_channel(tmp_path / "wide_red.tif", channel="red")


def test_read_channel_rejects_non_image_file(tmp_path):
    path = tmp_path / "notes_green.png"
    path.write_text("not an image")
    with rejects("The green channel (notes_green.png) is not a PNG or TIFF image; upload an 8- or 16-bit grayscale"):
        read_channel(path, channel="green")


def test_read_channel_rejects_truncated_png(tmp_path):
    data = png_bytes(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    path = tmp_path / "cut_blue.png"
    path.write_bytes(data[: len(data) // 2])
    with rejects("The blue channel (cut_blue.png) is damaged or not a readable PNG"):
        read_channel(path, channel="blue")


def test_read_channel_rejects_truncated_tiff(tmp_path):
    tifffile.imwrite(tmp_path / "full.tif", np.ones((64, 64), dtype=np.uint16))
    data = (tmp_path / "full.tif").read_bytes()
    (tmp_path / "cut_blue.tif").write_bytes(data[:200])
    with rejects("The blue channel (cut_blue.tif) "):
        read_channel(tmp_path / "cut_blue.tif", channel="blue")


def test_read_channel_rejects_float_tiff(tmp_path):
    tifffile.imwrite(tmp_path / "a_red.tif", np.zeros((4, 4), dtype=np.float32))
    with rejects("The red channel (a_red.tif) holds float32 pixels; upload an 8- or 16-bit grayscale PNG or TIFF."):
        read_channel(tmp_path / "a_red.tif", channel="red")


def test_read_channel_rejects_multi_plane_tiff(tmp_path):
    tifffile.imwrite(tmp_path / "stack_red.tif", np.zeros((5, 8, 8), dtype=np.uint8))
    with rejects("The red channel (stack_red.tif) holds 5 x 8 x 8 values but a channel file must hold one plane"):
        read_channel(tmp_path / "stack_red.tif", channel="red")


def test_read_channel_names_a_missing_file(tmp_path):
    with rejects("The yellow channel (gone.png) cannot be opened (No such file or directory); check the path."):
        read_channel(tmp_path / "gone.png", channel="yellow")


def test_read_field_rejects_mismatched_channel_sizes(tmp_path):
    sources = {
        "green": write_png(tmp_path / "a_green.png", np.zeros((8, 8), dtype=np.uint8)),
        "blue": write_png(tmp_path / "a_blue.png", np.zeros((8, 6), dtype=np.uint8)),
    }
    with rejects("All channels of a field must be 2-D images of one size, but they are: green 8 x 8 px, blue 6 x 8 px"):
        read_field(sources)


@pytest.mark.parametrize("missing", ["green", "blue"])
def test_read_field_requires_green_and_blue(tmp_path, missing):
    pixels = np.zeros((4, 4), dtype=np.uint8)
    sources = {name: write_png(tmp_path / f"a_{name}.png", pixels) for name in ("green", "blue")}
    del sources[missing]
    with rejects(f"The {missing} channel is missing; every field needs a green (protein) and a blue (nucleus) image."):
        read_field(sources)


def test_read_field_rejects_unknown_channel_names(tmp_path):
    pixels = np.zeros((4, 4), dtype=np.uint8)
    sources = {name: write_png(tmp_path / f"a_{name}.png", pixels) for name in ("green", "blue", "purple")}
    with rejects("Unknown channel 'purple'; name the channels red, green, blue, yellow."):
        read_field(sources)


def test_read_field_fills_missing_optional_channels_with_zeros(tmp_path):
    sources = {
        "green": write_png(tmp_path / "a_green.png", np.full((3, 4), 51, dtype=np.uint8)),
        "blue": write_png(tmp_path / "a_blue.png", np.full((3, 4), 65535, dtype=np.uint16)),
        "yellow": None,
    }
    field = read_field(sources)
    assert field.channels_present == ("green", "blue")
    assert field.shape == (3, 4)
    assert field.bit_depth == 16
    stack = field.stack()
    assert stack.shape == (4, 3, 4) and stack.dtype == np.float32
    np.testing.assert_array_equal(stack[:, 0, 0], np.array([0, 0.2, 1, 0], dtype=np.float32))


def test_field_stack_orders_channels_red_green_blue_yellow():
    values = {"red": 0.1, "green": 0.2, "blue": 0.3, "yellow": 0.4}
    field = FieldImages(**{name: np.full((2, 2), value, dtype=np.float32) for name, value in values.items()})
    assert field.channels_present == ("red", "green", "blue", "yellow")
    np.testing.assert_array_equal(field.stack()[:, 1, 1], np.array([0.1, 0.2, 0.3, 0.4], dtype=np.float32))


@pytest.mark.parametrize("layout", ["planes_first", "planes_last"])
def test_read_multichannel_tiff_reads_four_planes_in_channel_order(tmp_path, layout):
    planes = np.stack([np.full((5, 6), value, dtype=np.uint16) for value in (0, 13107, 26214, 65535)])
    pixels = planes if layout == "planes_first" else np.moveaxis(planes, 0, -1)
    tifffile.imwrite(tmp_path / "field.tif", pixels, photometric="minisblack")
    field = read_multichannel_tiff(tmp_path / "field.tif")
    assert field.shape == (5, 6)
    assert field.bit_depth == 16
    np.testing.assert_array_equal(field.stack()[:, 0, 0], np.array([0, 0.2, 0.4, 1], dtype=np.float32))


def test_read_multichannel_tiff_rejects_three_planes(tmp_path):
    tifffile.imwrite(tmp_path / "field.tif", np.zeros((3, 5, 6), dtype=np.uint8), photometric="minisblack")
    with rejects(
        "The file field.tif must hold 4 planes (red, green, blue, yellow) as (4, H, W) or (H, W, 4), "
        "but it has 3 pages (shape 3 x 5 x 6); save it with 4 pages, or upload each channel as its own file "
        "named {ID}_{channel}.tif."
    ):
        read_multichannel_tiff(tmp_path / "field.tif")


def test_read_multichannel_tiff_rejects_oversized_planes(tmp_path):
    tifffile.imwrite(tmp_path / "field.tif", np.zeros((4, 2, 40), dtype=np.uint8), photometric="minisblack")
    with rejects("The file field.tif is 40 x 2 px; the largest accepted side is 32 px."):
        read_multichannel_tiff(tmp_path / "field.tif", max_side_px=32)


def test_find_fields_groups_kaggle_layout_files_by_id(tmp_path):
    names = ("b_2_green.png", "b_2_blue.PNG", "a1_green.tif", "a1_blue.tiff", "a1_red.png", "a1_cells.png", "notes.txt")
    for name in names:
        (tmp_path / name).write_bytes(b"")
    fields = find_fields(tmp_path)
    assert list(fields) == ["a1", "b_2"]
    assert fields["a1"] == {
        "green": tmp_path / "a1_green.tif",
        "blue": tmp_path / "a1_blue.tiff",
        "red": tmp_path / "a1_red.png",
    }
    assert fields["b_2"] == {"green": tmp_path / "b_2_green.png", "blue": tmp_path / "b_2_blue.PNG"}


def test_find_fields_rejects_two_files_for_one_channel(tmp_path):
    (tmp_path / "a_green.png").write_bytes(b"")
    (tmp_path / "a_green.tif").write_bytes(b"")
    with rejects("Both a_green.png and a_green.tif hold the green channel of field a; keep one of them."):
        find_fields(tmp_path)


def test_find_fields_rejects_a_missing_folder(tmp_path):
    with rejects(f"{tmp_path / 'absent'} is not a folder"):
        find_fields(tmp_path / "absent")


def test_labels_png_round_trip_keeps_16bit_labels(tmp_path):
    labels = np.array([[0, 1, 2], [300, 65535, 0]], dtype=np.uint16)
    write_labels_png(tmp_path / "cells.png", labels)
    restored = read_labels_png(tmp_path / "cells.png")
    assert restored.dtype == np.uint16
    np.testing.assert_array_equal(restored, labels)


def test_write_labels_png_rejects_labels_beyond_16_bits(tmp_path):
    with pytest.raises(ValueError, match="0..65535"):
        write_labels_png(tmp_path / "cells.png", np.array([[70000]], dtype=np.int32))


REAL_FIELD_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real" / "field-b1"


@pytest.mark.skipif(not REAL_FIELD_DIR.is_dir(), reason="the real HPA fields (../shared/data/real) are not present")
def test_read_field_reads_a_real_16bit_hpa_field():
    field = read_field({"green": REAL_FIELD_DIR / "green.png", "blue": REAL_FIELD_DIR / "blue.png"})
    assert field.shape == (2048, 2048)
    assert field.bit_depth == 16
    assert field.channels_present == ("green", "blue")
    assert 0.0 <= field.blue.min() < field.blue.max() <= 1.0
