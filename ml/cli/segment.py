"""`python -m ml segment`: write nucleus and cell label images for every field of a folder.

For each field `{ID}` of `--images` (Kaggle layout, `{ID}_{red,green,blue,yellow}.png|tif`),
writes `{ID}_nuclei.png` and `{ID}_cells.png` (16-bit, 0 = background, cell i holds nucleus i).
"""

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from ml.device import resolve_device
from ml.io import InputError, find_fields, read_field, write_labels_png
from ml.segmentation import BACKENDS, Segmenter


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", type=Path, required=True, help="folder of {ID}_{channel}.png|tif files")
    parser.add_argument("--out", type=Path, required=True, help="folder to write {ID}_nuclei.png and {ID}_cells.png to")
    add_segmentation_arguments(parser)


def add_segmentation_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--segmentation", choices=BACKENDS, default="classical", help="segmentation backend")
    parser.add_argument("--nuclei-weights", type=Path, help="nucleus U-Net weights (unet backend)")
    parser.add_argument("--cell-weights", type=Path, help="cell U-Net weights (unet backend)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def run(args: argparse.Namespace) -> int:
    try:
        fields = find_input_fields(args.images)
        segmenter = build_segmenter(args)
    except (ValueError, OSError) as error:  # InputError and bad device names are ValueErrors
        print(error, file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    for image_id, paths in tqdm(fields.items(), desc="Segmenting", unit="field", file=sys.stderr):
        try:
            field = read_field(paths)
        except InputError as error:
            print(f"Field {image_id}: {error}", file=sys.stderr)
            return 1
        segmentation = segmenter(field)
        write_labels_png(args.out / f"{image_id}_nuclei.png", segmentation.nuclei_labels)
        write_labels_png(args.out / f"{image_id}_cells.png", segmentation.cell_labels)
    print(f"Wrote label images of {len(fields)} field(s) to {args.out}.", file=sys.stderr)
    return 0


def find_input_fields(images: Path) -> dict[str, dict[str, Path]]:
    """The fields of a Kaggle-layout folder; an empty folder is an error the user must fix."""
    fields = find_fields(images)
    if not fields:
        raise InputError(
            f"No fields found in {images}; expected files named {{ID}}_green.png and {{ID}}_blue.png "
            "(optionally {ID}_red.png and {ID}_yellow.png, or .tif)."
        )
    return fields


def build_segmenter(args: argparse.Namespace) -> Segmenter:
    """The segmenter the command-line options describe."""
    return Segmenter(
        args.segmentation,
        nuclei_weights=args.nuclei_weights,
        cell_weights=args.cell_weights,
        device=str(resolve_device(args.device)),
    )
