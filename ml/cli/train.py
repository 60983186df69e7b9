"""`python -m ml train`: train the per-cell classifier from image-level labels.

    python -m ml train --data DIR --out CKPT [--refine-rounds 1] [--epochs 6] [--size 96] ...

The options fill in `ml.training.classifier.TrainConfig`; the training itself is
`ml.training.classifier.train`.
"""

import argparse
import sys
from pathlib import Path

from ml.cli.options import add_segmentation_arguments, build_segmenter
from ml.io import InputError
from ml.training.classifier import TrainConfig, train

DEFAULTS = TrainConfig(data_dir=Path("."), out=Path("."))


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="Kaggle-layout folder with train.csv")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint to write (.pt)")
    parser.add_argument("--cache-dir", type=Path, help="segmentation and crop cache (default: DATA/.hpaweb-cache)")
    parser.add_argument("--size", type=int, default=DEFAULTS.size_px, help="crop side in px (the model input size)")
    parser.add_argument("--epochs", type=int, default=DEFAULTS.epochs, help="epochs on inherited (or true) labels")
    parser.add_argument(
        "--refine-rounds", type=int, default=DEFAULTS.refine_rounds, help="rounds of relabelling cells with the model"
    )
    parser.add_argument(
        "--refine-epochs", type=int, default=DEFAULTS.refine_epochs, help="epochs after each relabelling"
    )
    parser.add_argument(
        "--cell-labels-from-truth",
        action="store_true",
        help="train on the true cell labels of DATA/solution.csv (synthetic data; the weak-label ceiling)",
    )
    parser.add_argument("--max-fields", type=int, help="use only the first N fields of train.csv")
    parser.add_argument("--val-fraction", type=float, default=DEFAULTS.val_fraction)
    parser.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
    parser.add_argument("--lr", type=float, default=DEFAULTS.lr)
    parser.add_argument("--weight-decay", type=float, default=DEFAULTS.weight_decay)
    parser.add_argument("--widths", type=int, nargs=4, default=DEFAULTS.widths)
    parser.add_argument("--dropout", type=float, default=DEFAULTS.dropout)
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed)
    parser.add_argument("--threads", type=int, default=DEFAULTS.threads, help="CPU threads for torch")
    parser.add_argument("--workers", type=int, default=DEFAULTS.workers, help="data loader worker processes")
    add_segmentation_arguments(parser)


def run(args: argparse.Namespace) -> int:
    config = TrainConfig(
        data_dir=args.data,
        out=args.out,
        cache_dir=args.cache_dir,
        size_px=args.size,
        epochs=args.epochs,
        refine_rounds=args.refine_rounds,
        refine_epochs=args.refine_epochs,
        cell_labels_from_truth=args.cell_labels_from_truth,
        max_fields=args.max_fields,
        val_fraction=args.val_fraction,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        widths=tuple(args.widths),
        dropout=args.dropout,
        seed=args.seed,
        threads=args.threads,
        workers=args.workers,
        device=args.device,
        command="python -m ml train " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["train"] else sys.argv[1:]),
    )
    try:
        train(config, segmenter=build_segmenter(args))
    except (InputError, OSError) as error:
        print(error, file=sys.stderr)
        return 2
    return 0
