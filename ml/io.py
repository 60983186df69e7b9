"""Reading fluorescence channels and label images.

A field of view is four grayscale images (red microtubules, green protein, blue nucleus,
yellow ER). Files may be 8- or 16-bit PNG or TIFF; every channel is returned as float32 in
[0, 1] so later stages never see the bit depth. Sizes are checked from the file header before
any pixel is decoded, so an oversized upload is refused without allocating it.
"""

import dataclasses
import io
import re
import struct
import warnings
import zlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import tifffile
from PIL import Image

from ml.constants import CHANNELS, MAX_SIDE_PX, REQUIRED_CHANNELS

Source = str | Path | BinaryIO

# A channel file of the Kaggle layout, `{ID}_{channel}.png|tif|tiff`: group 1 is the field ID, group 2
# the channel. Matched case-insensitively (`re.IGNORECASE` here, the "i" flag in JavaScript); plain
# groups only, so the upload page compiles the same string as a JavaScript RegExp.
FIELD_FILE_PATTERN = rf"^(.+)_({'|'.join(CHANNELS)})\.(?:png|tiff?)$"
_FIELD_FILE = re.compile(FIELD_FILE_PATTERN, re.IGNORECASE)
# Training folders also hold the public HPA files as published: gzipped TIFF and JPEG copies.
DATASET_FILE_PATTERN = rf"^(.+)_({'|'.join(CHANNELS)})\.(?:png|tiff?|tiff?\.gz|jpe?g)$"
_DATASET_FILE = re.compile(DATASET_FILE_PATTERN, re.IGNORECASE)

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF
_GZIP_MAGIC = b"\x1f\x8b"
_JPEG_MAGIC = b"\xff\xd8\xff"
_LUMINANCE_WEIGHTS = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601, as Pillow's convert("L")
# Damaged files surface as any of these, depending on where the decoder gives up.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, KeyError, IndexError, struct.error, zlib.error)

_SUPPORTED = "an 8- or 16-bit grayscale PNG or TIFF"


class InputError(ValueError):
    """An input file the user supplied cannot be used; the message says why and what to do."""


@dataclass(frozen=True, eq=False)
class FieldImages:
    """One field of view; each channel float32 (H, W) in [0, 1], red and yellow optional."""

    green: np.ndarray
    blue: np.ndarray
    red: np.ndarray | None = None
    yellow: np.ndarray | None = None
    bit_depth: int = 8
    # The field's scale, when the user gives it (typical nucleus diameter in pixels); None = estimated.
    nucleus_diameter_px: float | None = None

    def __post_init__(self) -> None:
        shapes = {name: self._channel(name).shape for name in self.channels_present}
        if any(len(shape) != 2 for shape in shapes.values()) or len(set(shapes.values())) != 1:
            sizes = ", ".join(f"{name} {_describe_shape(shape)}" for name, shape in shapes.items())
            raise InputError(
                f"All channels of a field must be 2-D images of one size, but they are: {sizes}. "
                "Upload matching images."
            )

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) in pixels."""
        return self.green.shape

    @property
    def channels_present(self) -> tuple[str, ...]:
        return tuple(name for name in CHANNELS if self._channel(name) is not None)

    def stack(self) -> np.ndarray:
        """float32 (4, H, W) in `CHANNELS` order; a missing channel is all zeros."""
        stacked = np.zeros((len(CHANNELS), *self.shape), dtype=np.float32)
        for index, name in enumerate(CHANNELS):
            channel = self._channel(name)
            if channel is not None:
                stacked[index] = channel
        return stacked

    def _channel(self, name: str) -> np.ndarray | None:
        return getattr(self, name)


# A channel whose robust maximum uses less than this share of its file's range is dim (a 12-bit
# camera's 4095 in a 16-bit file is 1/16 of it; a 16-bit file of values under 256, 1/256) and is
# stretched over its own range by `normalise_range`; brighter channels are left exactly as read.
DIM_RANGE_FRACTION = 1 / 16
ROBUST_PERCENTILES = (0.1, 99.9)
# Percentiles are taken on every 4th row and column: as exact as needed, 16 times cheaper.
_PERCENTILE_STRIDE = 4
# The nucleus diameter of a typical human cell line, to turn a pixel size (µm/px) into a scale.
TYPICAL_NUCLEUS_DIAMETER_UM = 10.0


def nucleus_diameter_from(
    *, pixel_size_um: float | None = None, nucleus_diameter_px: float | None = None
) -> float | None:
    """The scale a user gave, as a nucleus diameter in pixels (a pixel size assumes a 10 µm nucleus); None when none."""
    if nucleus_diameter_px is not None:
        if not nucleus_diameter_px > 0:
            raise InputError(f"The nucleus diameter must be a positive number of pixels, not {nucleus_diameter_px}.")
        return float(nucleus_diameter_px)
    if pixel_size_um is not None:
        if not pixel_size_um > 0:
            raise InputError(f"The pixel size must be a positive number of µm per pixel, not {pixel_size_um}.")
        return TYPICAL_NUCLEUS_DIAMETER_UM / float(pixel_size_um)
    return None


def parse_channel_mapping(text: str) -> dict[str, str]:
    """A user's JSON object of OME channel name -> red/green/blue/yellow; {} when empty."""
    import json

    if not text.strip():
        return {}
    try:
        mapping = json.loads(text)
    except ValueError:
        mapping = None
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise InputError('The channel mapping must be a JSON object such as {"DAPI": "blue", "Alexa 488": "green"}.')
    bad = sorted(value for value in mapping.values() if value.strip().lower() not in CHANNELS)
    if bad:
        raise InputError(
            f"The channel mapping names {bad[0]!r}; map each channel name to one of {', '.join(CHANNELS)}."
        )
    return {str(name): value.strip().lower() for name, value in mapping.items()}


def normalise_range(field: FieldImages) -> FieldImages:
    """The field with each dim channel (robust maximum under `DIM_RANGE_FRACTION` of its file's range)
    stretched linearly from its 0.1th to its 99.9th percentile onto [0, 1]; other channels unchanged.

    Segmentation and the classifier's crops see such a field as they see a bright one, so a 16-bit
    image whose values stay under 256 is signal, not blank; measurements keep the values as read.
    """
    stretched = {}
    for name in field.channels_present:
        channel = getattr(field, name)
        sample = channel[::_PERCENTILE_STRIDE, ::_PERCENTILE_STRIDE]
        low, high = (float(value) for value in np.percentile(sample, ROBUST_PERCENTILES))
        if high >= DIM_RANGE_FRACTION or high <= low:
            continue
        scaled = channel - np.float32(low)
        scaled *= np.float32(1.0 / (high - low))
        stretched[name] = np.clip(scaled, 0.0, 1.0, out=scaled)
    return dataclasses.replace(field, **stretched) if stretched else field


def read_channel(source: Source, *, channel: str, max_side_px: int = MAX_SIDE_PX) -> tuple[np.ndarray, int]:
    """Read one grayscale channel file; returns (float32 (H, W) in [0, 1], bit depth 8 or 16)."""
    what = _describe_source(source, channel)
    pixels = _read_plane(source, what=what, max_side_px=max_side_px)
    return to_unit_float(pixels), _bit_depth(pixels.dtype)


def read_field(sources: Mapping[str, Source | None], *, max_side_px: int = MAX_SIDE_PX) -> FieldImages:
    """Read a field from one file per channel (keys from `CHANNELS`; red and yellow may be absent)."""
    unknown = sorted(set(sources) - set(CHANNELS))
    if unknown:
        raise InputError(f"Unknown channel {unknown[0]!r}; name the channels {', '.join(CHANNELS)}.")
    missing = [name for name in REQUIRED_CHANNELS if sources.get(name) is None]
    if missing:
        raise InputError(
            f"The {missing[0]} channel is missing; every field needs a green (protein) and a blue (nucleus) image."
        )
    present = [name for name in CHANNELS if sources.get(name) is not None]
    # Pillow and tifffile release the GIL while they decode, so the channels are read side by
    # side; the first bad channel in CHANNELS order is the one reported.
    with ThreadPoolExecutor(max_workers=len(present)) as pool:
        decoded = list(
            pool.map(lambda name: read_channel(sources[name], channel=name, max_side_px=max_side_px), present)
        )
    images = {name: image for name, (image, _bit_depth) in zip(present, decoded, strict=True)}
    return FieldImages(**images, bit_depth=max(bit_depth for _image, bit_depth in decoded))


# Words in an OME channel name (lower case) that say which of the four channels it is; the first
# channel whose words match wins. Names such as "DAPI", "Hoechst 33342", "Alexa 488 antibody",
# "Tubulin" or "Calreticulin (ER)" map without a mapping.
OME_CHANNEL_WORDS: dict[str, tuple[str, ...]] = {
    "blue": ("blue", "dapi", "hoechst", "nucleus", "nuclei", "nuclear", "draq5"),
    "green": ("green", "protein", "gfp", "antibody", "488", "fitc", "target"),
    "red": ("red", "microtubule", "microtubules", "tubulin"),
    "yellow": ("yellow", "er", "endoplasmic", "reticulum", "calreticulin"),
}


def ome_channel_names(source: Source) -> list[str] | None:
    """The channel names of an OME-TIFF in file order; None when the file has no OME channel names."""
    what = _describe_source(source, None)
    with _open_tiff(source, what) as tiff:
        return _ome_names(tiff)


def _ome_names(tiff: tifffile.TiffFile) -> list[str] | None:
    if not tiff.is_ome or not tiff.ome_metadata:
        return None
    import xml.etree.ElementTree as ElementTree

    try:
        root = ElementTree.fromstring(tiff.ome_metadata)
    except ElementTree.ParseError:
        return None
    pixels = next((element for element in root.iter() if element.tag.endswith("Pixels")), None)
    if pixels is None:
        return None
    names = [channel.get("Name") or "" for channel in pixels if channel.tag.endswith("Channel")]
    return names if names and all(names) else None


def map_ome_channels(names: Sequence[str], mapping: Mapping[str, str] | None = None) -> dict[int, str]:
    """{index in the file: red/green/blue/yellow} for OME channel names, by `mapping` (name -> channel,
    names compared without case; names it leaves out are not used) or else by `OME_CHANNEL_WORDS`."""
    if mapping:
        wanted = {str(name).strip().lower(): str(channel).strip().lower() for name, channel in mapping.items()}
        bad = sorted(channel for channel in wanted.values() if channel not in CHANNELS)
        if bad:
            raise InputError(
                f"The channel mapping names {bad[0]!r}; map each channel name to one of {', '.join(CHANNELS)}."
            )
        assigned = {
            index: wanted[name.strip().lower()] for index, name in enumerate(names) if name.strip().lower() in wanted
        }
    else:
        assigned = {}
        for index, name in enumerate(names):
            words = set(re.split(r"[^a-z0-9]+", name.lower()))
            channel = next((ch for ch, keys in OME_CHANNEL_WORDS.items() if words & set(keys)), None)
            if channel is None:
                raise InputError(
                    f"The OME channel {name!r} is not recognised as red, green, blue or yellow; give a mapping "
                    f'such as {{"{name}": "green"}} (channel names: {", ".join(names)}).'
                )
            assigned[index] = channel
    channels = list(assigned.values())
    repeated = sorted({channel for channel in channels if channels.count(channel) > 1})
    if repeated:
        raise InputError(
            f"Two OME channels ({', '.join(names[i] for i, ch in assigned.items() if ch == repeated[0])}) map to "
            f"{repeated[0]}; give a mapping that names one channel for each of {', '.join(CHANNELS)}."
        )
    missing = [channel for channel in REQUIRED_CHANNELS if channel not in channels]
    if missing:
        raise InputError(
            f"No OME channel maps to {missing[0]} (channel names: {', '.join(names)}); every field needs a "
            "green (protein) and a blue (nucleus) channel: give a mapping."
        )
    return assigned


def read_multichannel_tiff(
    source: Source, *, max_side_px: int = MAX_SIDE_PX, channel_mapping: Mapping[str, str] | None = None
) -> FieldImages:
    """Read a field from one TIFF holding 4 planes in `CHANNELS` order, as (4, H, W) or (H, W, 4); or
    from an OME-TIFF whose channels are named, each mapped onto red, green, blue or yellow by its name
    (`map_ome_channels`, with `channel_mapping` name -> channel where given)."""
    what = _describe_source(source, None)
    expected = f"{what} must hold 4 planes (red, green, blue, yellow) as (4, H, W) or (H, W, 4)"
    with _open_tiff(source, what) as tiff:
        names = _ome_names(tiff)
        if names is not None or channel_mapping:
            return _read_ome(tiff, names, channel_mapping, what=what, max_side_px=max_side_px)
        series = tiff.series[0]
        shape = tuple(side for side in series.shape if side != 1)
        if len(shape) != 3 or len(CHANNELS) not in (shape[0], shape[-1]):
            pages = len(tiff.pages)
            if pages > 1 and pages != len(CHANNELS):
                raise InputError(
                    f"{expected}, but it has {pages} pages (shape {_describe_shape(series.shape)}); save it with "
                    f"{len(CHANNELS)} pages, or upload each channel as its own file named {{ID}}_{{channel}}.tif."
                )
            raise InputError(f"{expected}, but its shape is {_describe_shape(series.shape)}.")
        channels_last = shape[0] != len(CHANNELS)
        height, width = shape[:2] if channels_last else shape[1:]
        _check_size(height, width, what=what, max_side_px=max_side_px)
        _check_dtype(series.dtype, what)
        pixels = _decode(series.asarray, what).reshape(shape)
    planes = np.moveaxis(pixels, -1, 0) if channels_last else pixels
    images = {name: to_unit_float(plane) for name, plane in zip(CHANNELS, planes, strict=True)}
    return FieldImages(**images, bit_depth=_bit_depth(pixels.dtype))


def _read_ome(
    tiff: tifffile.TiffFile,
    names: list[str] | None,
    mapping: Mapping[str, str] | None,
    *,
    what: str,
    max_side_px: int,
) -> FieldImages:
    series = tiff.series[0]
    if names is None:
        raise InputError(f"{what} has no OME channel names, so a channel mapping cannot apply; leave the mapping out.")
    axes = series.axes
    if "C" not in axes and len(names) == 1:
        axes, shape = "C" + axes, (1, *series.shape)
    else:
        shape = series.shape
    extra = [axis for axis, side in zip(axes, shape, strict=True) if axis not in "CYX" and side != 1]
    if "C" not in axes or extra or shape[axes.index("C")] != len(names):
        raise InputError(
            f"{what} must hold one plane per named channel (axes C, Y, X); its axes are {series.axes} "
            f"with shape {_describe_shape(series.shape)}. Save one time point and one z-plane."
        )
    height, width = shape[axes.index("Y")], shape[axes.index("X")]
    _check_size(height, width, what=what, max_side_px=max_side_px)
    _check_dtype(series.dtype, what)
    assigned = map_ome_channels(names, mapping)
    pixels = _decode(series.asarray, what).reshape(shape)
    # Drop the axes of size 1, then put the rest in C, Y, X order.
    kept_axes = "".join(axis for axis in axes if axis in "CYX")
    pixels = pixels.reshape([side for axis, side in zip(axes, shape, strict=True) if axis in "CYX"])
    pixels = np.transpose(pixels, [kept_axes.index(axis) for axis in "CYX"])
    planes = {channel: to_unit_float(pixels[index]) for index, channel in assigned.items()}
    return FieldImages(**planes, bit_depth=_bit_depth(pixels.dtype))


def find_fields(directory: Path, *, public_formats: bool = False) -> dict[str, dict[str, Path]]:
    """Map each field ID of a Kaggle-layout folder (`{ID}_{channel}.png|tif|tiff`) to its channel files.

    IDs are sorted; a field with missing channels is still listed so that `read_field` can say
    which channel is missing. `public_formats` also takes the public HPA files (`.tif.gz`, `.jpg`).
    """
    pattern = _DATASET_FILE if public_formats else _FIELD_FILE
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"{directory} is not a folder; pass the folder that holds the {{ID}}_green.png files.")
    fields: dict[str, dict[str, Path]] = {}
    for path in sorted(directory.iterdir()):
        match = pattern.match(path.name)
        if match is None or not path.is_file():
            continue
        image_id, channel = match[1], match[2].lower()
        channels = fields.setdefault(image_id, {})
        if channel in channels:
            raise InputError(
                f"Both {channels[channel].name} and {path.name} hold the {channel} channel of field "
                f"{image_id}; keep one of them."
            )
        channels[channel] = path
    return dict(sorted(fields.items()))


def write_labels_png(path: str | Path, labels: np.ndarray) -> None:
    """Write a label image (0 = background) as a 16-bit grayscale PNG."""
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"Labels must be a 2-D integer array, got {labels.dtype} {labels.shape}.")
    if labels.size and (labels.min() < 0 or labels.max() > np.iinfo(np.uint16).max):
        raise ValueError("Labels must lie in 0..65535 to fit a 16-bit PNG.")
    # zlib's run-length strategy suits label images: faster than its default level and smaller.
    Image.fromarray(labels.astype(np.uint16)).save(path, format="PNG", compress_type=zlib.Z_RLE)


def read_labels_png(path: str | Path) -> np.ndarray:
    """Read a label PNG written by `write_labels_png` (or any 8/16-bit grayscale PNG) as uint16 (H, W)."""
    with Image.open(path) as image:
        labels = np.asarray(image)
    if labels.ndim != 2:
        raise InputError(f"{Path(path).name} is not a grayscale label image; write labels with write_labels_png.")
    return labels.astype(np.uint16)


def _read_plane(source: Source, *, what: str, max_side_px: int) -> np.ndarray:
    """Decode one file to a 2-D uint8/uint16 array, refusing oversized files before decoding."""
    source = _seekable(source)
    magic = _peek(source, len(_PNG_MAGIC), what)
    if magic.startswith(_PNG_MAGIC):
        return _read_png(source, what=what, max_side_px=max_side_px)
    if magic[:4] in _TIFF_MAGICS:
        return _read_tiff_plane(source, what=what, max_side_px=max_side_px)
    if magic.startswith(_GZIP_MAGIC):  # the public HPA `.tif.gz` files
        return _read_plane(_gunzip(source, what=what, max_side_px=max_side_px), what=what, max_side_px=max_side_px)
    if magic.startswith(_JPEG_MAGIC):
        return _read_jpeg(source, what=what, max_side_px=max_side_px)
    raise InputError(f"{what} is not a PNG or TIFF image; upload {_SUPPORTED}.")


def _read_png(source: Source, *, what: str, max_side_px: int) -> np.ndarray:
    try:
        # Pillow's own bomb check fires at open for absurd headers; our size check covers the rest.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source, formats=["PNG"]) as image:
                _check_size(image.height, image.width, what=what, max_side_px=max_side_px)
                pixels = _png_pixels(image, what)
    except InputError:  # already says what is wrong; InputError is also a ValueError
        raise
    except Image.DecompressionBombError:
        raise InputError(
            f"{what} claims to be too large to read safely; the largest accepted side is {max_side_px} px."
        ) from None
    except _DECODE_ERRORS as error:
        raise InputError(
            f"{what} is damaged or not a readable PNG ({error}); export it again as {_SUPPORTED}."
        ) from None
    return pixels


def _gunzip(source: Source, *, what: str, max_side_px: int) -> io.BytesIO:
    """The decompressed bytes of a gzipped image, refused beyond what a 4-plane 16-bit image of
    the largest accepted side can hold (a gzip bomb stops there)."""
    limit = 8 * max_side_px * max_side_px + (1 << 20)
    inflater = zlib.decompressobj(wbits=31)
    try:
        compressed = Path(source).read_bytes() if isinstance(source, (str, Path)) else source.read()
        data = inflater.decompress(compressed, limit)
    except (OSError, zlib.error) as error:
        raise InputError(f"{what} is damaged or not a readable gzip file ({error}); download it again.") from None
    if inflater.unconsumed_tail:
        raise InputError(f"{what} unpacks to more than an image of at most {max_side_px} px a side can hold.")
    if not inflater.eof:
        raise InputError(f"{what} is a truncated gzip file; download it again.")
    return io.BytesIO(data)


def _read_jpeg(source: Source, *, what: str, max_side_px: int) -> np.ndarray:
    """A JPEG channel as uint8 (H, W). The public HPA JPEGs show each channel in its colour (red
    as (v, 0, 0), yellow as (v, v, 0)), so a colour JPEG gives the brightest of its planes."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source, formats=["JPEG"]) as image:
                _check_size(image.height, image.width, what=what, max_side_px=max_side_px)
                pixels = np.asarray(image.convert("L") if image.mode not in ("L", "RGB") else image)
    except InputError:
        raise
    except Image.DecompressionBombError:
        raise InputError(
            f"{what} claims to be too large to read safely; the largest accepted side is {max_side_px} px."
        ) from None
    except _DECODE_ERRORS as error:
        raise InputError(f"{what} is damaged or not a readable JPEG ({error}); download it again.") from None
    return pixels.max(axis=-1) if pixels.ndim == 3 else pixels


def _png_pixels(image: Image.Image, what: str) -> np.ndarray:
    mode = image.mode
    if mode == "1":
        image = image.convert("L")
    elif mode == "P":
        image = image.convert("RGBA")
    pixels = np.asarray(image)
    if pixels.dtype.kind == "i":  # Pillow's 32-bit mode "I", used by some 16-bit PNG writers
        pixels = _int_to_uint16(pixels, what)
    if pixels.ndim == 3:
        pixels = _reduce_to_plane(pixels)
    _check_dtype(pixels.dtype, what)
    return pixels


def _read_tiff_plane(source: Source, *, what: str, max_side_px: int) -> np.ndarray:
    with _open_tiff(source, what) as tiff:
        series = tiff.series[0]
        axes = "".join(axis for axis, side in zip(series.axes, series.shape, strict=True) if side != 1)
        shape = tuple(side for side in series.shape if side != 1)
        is_colour = len(shape) == 3 and "S" in axes and shape[axes.index("S")] in (2, 3, 4)
        if len(shape) != 2 and not is_colour:
            raise InputError(
                f"{what} holds {_describe_shape(series.shape)} values but a channel file must hold one plane; "
                "upload one file per channel, or the 4-plane TIFF as a multi-channel upload."
            )
        height, width = (side for axis, side in zip(axes, shape, strict=True) if axis != "S")
        _check_size(height, width, what=what, max_side_px=max_side_px)
        _check_dtype(series.dtype, what)
        pixels = _decode(series.asarray, what).reshape(shape)
    if is_colour:
        pixels = _reduce_to_plane(np.moveaxis(pixels, axes.index("S"), -1))
    return pixels


def _open_tiff(source: Source, what: str) -> tifffile.TiffFile:
    try:
        return tifffile.TiffFile(source)
    except _DECODE_ERRORS as error:
        raise InputError(
            f"{what} is damaged or not a readable TIFF ({error}); export it again as {_SUPPORTED}."
        ) from None


def _decode(read: Callable[[], np.ndarray], what: str) -> np.ndarray:
    try:
        return read()
    except _DECODE_ERRORS as error:
        raise InputError(
            f"{what} could not be decoded ({error}); save it uncompressed or with deflate compression as {_SUPPORTED}."
        ) from None


def _reduce_to_plane(pixels: np.ndarray) -> np.ndarray:
    """(H, W, C) gray+alpha or RGB(A) -> (H, W): the single non-empty colour plane, else luminance."""
    colour = pixels[..., :1] if pixels.shape[-1] <= 2 else pixels[..., :3]  # drop alpha
    non_empty = [index for index in range(colour.shape[-1]) if colour[..., index].any()]
    if len(non_empty) <= 1:
        return colour[..., non_empty[0] if non_empty else 0]
    luminance = colour @ _LUMINANCE_WEIGHTS
    return np.rint(luminance).astype(pixels.dtype)


def _int_to_uint16(pixels: np.ndarray, what: str) -> np.ndarray:
    if pixels.size and (pixels.min() < 0 or pixels.max() > np.iinfo(np.uint16).max):
        raise InputError(f"{what} holds values outside 0..65535; upload {_SUPPORTED}.")
    return pixels.astype(np.uint16)


def _check_size(height: int, width: int, *, what: str, max_side_px: int) -> None:
    if height > max_side_px or width > max_side_px:
        raise InputError(
            f"{what} is {width} x {height} px; the largest accepted side is {max_side_px} px. Downscale it first."
        )
    if height == 0 or width == 0:
        raise InputError(f"{what} is empty ({width} x {height} px); upload the full image.")


def _check_dtype(dtype: np.dtype, what: str) -> None:
    dtype = np.dtype(dtype)
    if dtype.kind != "u" or dtype.itemsize not in (1, 2):
        raise InputError(f"{what} holds {dtype.name} pixels; upload {_SUPPORTED}.")


def _bit_depth(dtype: np.dtype) -> int:
    return 8 * np.dtype(dtype).itemsize


def to_unit_float(pixels: np.ndarray) -> np.ndarray:
    """Unsigned integer pixels as float32 in [0, 1], k / the type's maximum: how every channel is read."""
    scaled = pixels.astype(np.float32)
    scaled /= np.float32(np.iinfo(pixels.dtype).max)  # division, so 51 / 255 is exactly float32(0.2)
    return scaled


def _seekable(source: Source) -> Source:
    """Formats are sniffed by their first bytes, so streams that cannot seek are read into memory."""
    if isinstance(source, (str, Path)) or source.seekable():
        return source
    return io.BytesIO(source.read())


def _peek(source: Source, size: int, what: str) -> bytes:
    if isinstance(source, (str, Path)):
        try:
            with open(source, "rb") as file:
                return file.read(size)
        except OSError as error:
            raise InputError(f"{what} cannot be opened ({error.strerror}); check the path.") from None
    position = source.tell()
    head = source.read(size)
    source.seek(position)
    return head


def _describe_source(source: Source, channel: str | None) -> str:
    name = Path(source).name if isinstance(source, (str, Path)) else getattr(source, "name", None)
    if channel is None:
        return f"The file {Path(name).name}" if name else "The file"
    return f"The {channel} channel ({Path(name).name})" if name else f"The {channel} channel"


def _describe_shape(shape: tuple[int, ...]) -> str:
    """(H, W) as "W x H px" (how people quote image sizes); other shapes axis by axis."""
    if len(shape) == 2:
        return f"{shape[1]} x {shape[0]} px"
    return " x ".join(str(side) for side in shape)
