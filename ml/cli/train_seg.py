"""`python -m ml train-seg`: train or fine-tune a segmentation U-Net on label images.

    python -m ml train-seg --images DIR --labels DIR --out CKPT [--kind cell] [--init CKPT]
                           [--epochs 10] [--device auto]

--images is a Kaggle-layout folder of fields, --labels holds their label images
(`{ID}_nuclei.png` or `{ID}_cells.png`, as `python -m ml segment` writes them). The training
itself is `ml.training.segmentation.train_segmentation`.
"""

import argparse
import sys
from pathlib import Path

from ml.checkpoints import CheckpointError
from ml.io import InputError
from ml.segmentation.hpa.preprocess import KINDS
from ml.training.segmentation import train_segmentation


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", type=Path, required=True, help="folder of {ID}_{channel}.png|tif fields")
    parser.add_argument(
        "--labels", type=Path, required=True, help="folder of {ID}_nuclei.png / {ID}_cells.png label images"
    )
    parser.add_argument("--out", type=Path, required=True, help="checkpoint to write (.pt)")
    parser.add_argument("--kind", choices=KINDS, default="cell", help="train the nuclei or the cell network")
    parser.add_argument(
        "--init", type=Path, help="start from this segmentation checkpoint (e.g. converted HPA weights)"
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=1, help="fields per step")
    parser.add_argument("--lr", type=float, default=1e-4, help="learning rate (AdamW)")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="fields held out for validation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def run(args: argparse.Namespace) -> int:
    try:
        train_segmentation(
            images=args.images,
            labels=args.labels,
            out=args.out,
            kind=args.kind,
            init=args.init,
            epochs=args.epochs,
            device=args.device,
            learning_rate=args.lr,
            batch_size=args.batch_size,
            val_fraction=args.val_fraction,
            seed=args.seed,
        )
    except (InputError, CheckpointError, ValueError) as error:
        print(error, file=sys.stderr)
        return 2
    print(f"Wrote the {args.kind} network to {args.out}.", file=sys.stderr)
    return 0
