"""`python -m ml fit-familiarity`: describe a classifier's training cells in an existing checkpoint.

    python -m ml fit-familiarity --model CKPT --data DIR [--out CKPT] [--max-fields N]

DIR is the model's training data in Kaggle layout (train.csv and the fields); every listed field
is segmented and cropped at the checkpoint's input size through the training cache
(`ml.training.data`), the model's pooled features of every layer (stem to penultimate) of
those cells are described (`ml.classifier.familiarity`), and the description is written into the
checkpoint (or into --out). The weights are not touched. A checkpoint with an earlier
single-layer description still loads and scores; running this replaces it. The work is `ml.training.classifier.add_familiarity_from_data`.
"""

import argparse
import sys
from pathlib import Path

from ml.cli.options import add_segmentation_arguments, build_segmenter
from ml.training.classifier import add_familiarity_from_data


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True, help="classifier checkpoint (.pt)")
    parser.add_argument("--data", type=Path, required=True, help="the model's training data: folder with train.csv")
    parser.add_argument("--out", type=Path, help="checkpoint to write (default: update --model in place)")
    parser.add_argument("--max-fields", type=int, help="use only the first N fields of train.csv")
    parser.add_argument("--cache-dir", type=Path, help="segmentation and crop cache (default: DATA/.hpaweb-cache)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    add_segmentation_arguments(parser)


def run(args: argparse.Namespace) -> int:
    try:
        familiarity = add_familiarity_from_data(
            args.model,
            data_dir=args.data,
            segmenter=build_segmenter(args),
            out=args.out,
            cache_dir=args.cache_dir,
            max_fields=args.max_fields,
            device=args.device,
            threads=args.threads,
        )
    except (ValueError, OSError) as error:  # InputError, CheckpointError and bad device names are ValueErrors
        print(error, file=sys.stderr)
        return 2
    print(f"Wrote the familiarity of {familiarity.training_cells} cells to {args.out or args.model}.", file=sys.stderr)
    return 0
