"""`python -m ml segment`: write nucleus and cell label images for every field of a folder.

    python -m ml segment --images DIR --out DIR [--segmentation classical|unet]
                         [--nuclei-weights P --cell-weights P] [--device auto]

For each field `{ID}` of `--images` (Kaggle layout, `{ID}_{red,green,blue,yellow}.png|tif`),
writes `{ID}_nuclei.png` and `{ID}_cells.png` (16-bit, 0 = background, cell i holds nucleus i).
"""

import argparse
import sys
from pathlib import Path

from ml.cli.options import (
    add_channel_map_argument,
    add_segmentation_arguments,
    build_segmenter,
    find_input_fields,
    parse_channel_map,
    read_input_fields,
)
from ml.io import InputError, write_labels_png


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--images", type=Path, required=True, help="folder of {ID}_{channel}.png|tif or {ID}.ome.tif files"
    )
    parser.add_argument("--out", type=Path, required=True, help="folder to write {ID}_nuclei.png and {ID}_cells.png to")
    add_channel_map_argument(parser)
    add_segmentation_arguments(parser)


def run(args: argparse.Namespace) -> int:
    try:
        fields = find_input_fields(args.images)
        channel_map = parse_channel_map(args.channel_map)
        segmenter = build_segmenter(args)
    except (ValueError, OSError) as error:  # InputError and bad device names are ValueErrors
        print(error, file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        for image_id, field in read_input_fields(fields, description="Segmenting", channel_map=channel_map):
            segmentation = segmenter(field)
            write_labels_png(args.out / f"{image_id}_nuclei.png", segmentation.nuclei_labels)
            write_labels_png(args.out / f"{image_id}_cells.png", segmentation.cell_labels)
    except InputError as error:
        print(error, file=sys.stderr)
        return 1
    print(f"Wrote label images of {len(fields)} field(s) to {args.out}.", file=sys.stderr)
    return 0
