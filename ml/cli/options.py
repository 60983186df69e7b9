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

from ml.constants import DEFAULT_SEGMENTATION_BACKEND
from ml.device import resolve_device
from ml.io import FieldImages, InputError, find_fields, read_field
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


def find_input_fields(images: Path) -> dict[str, dict[str, Path]]:
    """The fields of a Kaggle-layout folder; an empty folder is an error the user must fix."""
    fields = find_fields(images)
    if not fields:
        raise InputError(
            f"No fields found in {images}; expected files named {{ID}}_green.png and {{ID}}_blue.png "
            "(optionally {ID}_red.png and {ID}_yellow.png, or .tif)."
        )
    return fields


def read_input_fields(
    fields: Mapping[str, Mapping[str, Path]], *, description: str
) -> Iterator[tuple[str, FieldImages]]:
    """Each field read in turn, behind a progress bar; an unreadable one raises `InputError` naming it."""
    for image_id, paths in tqdm(fields.items(), desc=description, unit="field", file=sys.stderr):
        try:
            yield image_id, read_field(paths)
        except InputError as error:
            raise InputError(f"Field {image_id}: {error}") from None
