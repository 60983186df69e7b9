"""Options shared by several commands: choosing the segmentation backend, finding the input fields.

`python -m ml segment`, `predict` and `train` all take `--segmentation`, `--nuclei-weights`,
`--cell-weights` (unet), `--nuclei-model`, `--cell-model` (bioimageio packages) and `--device`
(`add_segmentation_arguments`) and turn them into one `Segmenter` (`build_segmenter`).
"""

import argparse
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

from tqdm import tqdm

from ml.constants import CHANNELS, DEFAULT_SEGMENTATION_BACKEND
from ml.device import resolve_device
from ml.io import FieldImages, InputError, find_fields, read_field, read_multichannel_tiff
from ml.segmentation import Segmenter
from ml.segmentation.segmenter import SEGMENTER_BACKENDS


def add_segmentation_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--segmentation", choices=SEGMENTER_BACKENDS, default=DEFAULT_SEGMENTATION_BACKEND, help="segmentation backend"
    )
    parser.add_argument("--nuclei-weights", type=Path, help="nucleus U-Net weights (unet backend)")
    parser.add_argument("--cell-weights", type=Path, help="cell U-Net weights (unet backend)")
    parser.add_argument("--nuclei-model", type=Path, help="nucleus bioimage.io package (bioimageio backend)")
    parser.add_argument("--cell-model", type=Path, help="cell bioimage.io package (bioimageio backend)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def build_segmenter(args: argparse.Namespace) -> Segmenter:
    """The segmenter the command-line options describe."""
    return Segmenter(
        args.segmentation,
        nuclei_weights=args.nuclei_weights,
        cell_weights=args.cell_weights,
        nuclei_model=args.nuclei_model,
        cell_model=args.cell_model,
        device=str(resolve_device(args.device)),
    )


def segmenter_spec(args: argparse.Namespace):
    """The segmenter the options describe, as a recipe that each preparation process builds."""
    from ml.training.prepare import SegmenterSpec

    return SegmenterSpec(
        args.segmentation,
        nuclei_weights=args.nuclei_weights,
        cell_weights=args.cell_weights,
        nuclei_model=args.nuclei_model,
        cell_model=args.cell_model,
        device=str(resolve_device(args.device)),
    )


# Key of a field read from one OME-TIFF (`{ID}.ome.tif` or `.ome.tiff`) in `find_input_fields`' answer.
OME_FIELD = "ome"
_OME_SUFFIXES = (".ome.tif", ".ome.tiff")


def find_input_fields(images: Path) -> dict[str, dict[str, Path]]:
    """The fields of a folder: Kaggle layout (`{ID}_{channel}.png|tif`) and OME-TIFF files (`{ID}.ome.tif`,
    one field each, as {OME_FIELD: path}); an empty folder is an error the user must fix."""
    fields = find_fields(images)
    for path in sorted(Path(images).iterdir()):
        suffix = next((end for end in _OME_SUFFIXES if path.name.lower().endswith(end)), None)
        if suffix is None or not path.is_file():
            continue
        image_id = path.name[: -len(suffix)]
        if image_id in fields:
            raise InputError(
                f"Field {image_id} is both the OME-TIFF {path.name} and channel files in {images}; keep one of them."
            )
        fields[image_id] = {OME_FIELD: path}
    if not fields:
        raise InputError(
            f"No fields found in {images}; expected files named {{ID}}_green.png and {{ID}}_blue.png "
            "(optionally {ID}_red.png and {ID}_yellow.png, or .tif), or OME-TIFF files named {ID}.ome.tif."
        )
    return dict(sorted(fields.items()))


def add_channel_map_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--channel-map",
        default="",
        help="for OME-TIFF files: which named channel is which, as red=Tubulin,green=GFP,blue=DAPI,yellow=ER "
        "(default: recognised from the channel names)",
    )


def parse_channel_map(text: str) -> dict[str, str]:
    """`red=Tubulin,green=GFP,...` as {OME channel name: red/green/blue/yellow}; {} when empty."""
    mapping: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        channel, equals, name = (piece.strip() for piece in item.partition("="))
        if not equals or not name or channel.lower() not in CHANNELS:
            raise InputError(
                f"--channel-map item {item!r} is not channel=name; write it as red=Tubulin,green=GFP,blue=DAPI "
                f"(channels: {', '.join(CHANNELS)})."
            )
        if channel.lower() in mapping.values():
            raise InputError(f"--channel-map names the {channel.lower()} channel twice; name it once.")
        mapping[name] = channel.lower()
    return mapping


def read_input_fields(
    fields: Mapping[str, Mapping[str, Path]], *, description: str, channel_map: Mapping[str, str] | None = None
) -> Iterator[tuple[str, FieldImages]]:
    """Each field read in turn, behind a progress bar; an unreadable one raises `InputError` naming it.
    OME-TIFF fields map their channels by `channel_map` (name -> channel) or else by their names."""
    for image_id, paths in tqdm(fields.items(), desc=description, unit="field", file=sys.stderr):
        try:
            if OME_FIELD in paths:
                yield image_id, read_multichannel_tiff(paths[OME_FIELD], channel_mapping=channel_map or None)
                continue
            yield image_id, read_field(paths)
        except InputError as error:
            raise InputError(f"Field {image_id}: {error}") from None
