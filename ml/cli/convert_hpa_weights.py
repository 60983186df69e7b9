"""`python -m ml convert-hpa-weights SRC DST`: turn an official HPA segmentation weight file into a checkpoint.

    python -m ml convert-hpa-weights dpn_unet_nuclei_v1.pth weights/hpa-nuclei.pt
    python -m ml convert-hpa-weights dpn_unet_cell_3ch_v1.pth weights/hpa-cell.pt

The conversion, and why the official files need one, is `ml.segmentation.hpa.convert`.
"""

import argparse
import sys
from pathlib import Path

from ml.segmentation.hpa.convert import WeightFileError, convert
from ml.segmentation.hpa.preprocess import KINDS


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SRC", type=Path, help="official weight file, e.g. dpn_unet_nuclei_v1.pth")
    parser.add_argument("destination", metavar="DST", type=Path, help="checkpoint to write (.pt)")
    parser.add_argument(
        "--kind", choices=KINDS, help="which network the file holds (default: from the file name, 'nuclei' or 'cell')"
    )


def run(args: argparse.Namespace) -> int:
    try:
        config = convert(args.source, args.destination, kind=args.kind)
    except (WeightFileError, ValueError, OSError) as error:
        print(error, file=sys.stderr)
        return 2
    print(f"Wrote the {config['kind']} network to {args.destination}.", file=sys.stderr)
    return 0
