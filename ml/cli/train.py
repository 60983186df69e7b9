"""`python -m ml train`: train the per-cell classifier from image-level labels.

    python -m ml train --data DIR --out CKPT [--refine-rounds 1] [--epochs 6] [--size 96] ...
    python -m ml train --store STORE --out CKPT --arch efficientnet_lite0 --pretrained imagenet ...
    torchrun --nproc-per-node N -m ml train ...        (DistributedDataParallel)

The options fill in `ml.training.classifier.TrainConfig`; the training itself is
`ml.training.classifier.train`. With --data the fields are prepared into the cell store first
(`--jobs` processes; `python -m ml prepare` does that step alone).
"""

import argparse
import sys
from pathlib import Path

from ml.checkpoints import CheckpointError
from ml.cli.options import add_segmentation_arguments, segmenter_spec
from ml.io import InputError
from ml.training.classifier import TrainConfig, TrainingCancelled, train

DEFAULTS = TrainConfig(data_dir=Path("."), out=Path("."))


def configure_parser(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="Kaggle-layout folder with train.csv")
    source.add_argument("--store", type=Path, help="a ready cell store (`python -m ml prepare`) instead of --data")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint to write (.pt)")
    parser.add_argument("--cache-dir", type=Path, help="where the cell store goes (default: DATA/.hpaweb-cache)")
    parser.add_argument("--jobs", type=int, default=DEFAULTS.jobs, help="processes preparing the fields")
    parser.add_argument(
        "--arch", default=DEFAULTS.arch, help="compact, or a timm backbone (efficientnet_lite0, resnet18, ...)"
    )
    parser.add_argument("--pretrained", help="imagenet (weights on disk) or a torchvision/timm state_dict file")
    parser.add_argument("--init", type=Path, help="fine-tune this classifier checkpoint")
    parser.add_argument("--patience", type=int, help="stop a stage after N epochs without a better validation score")
    parser.add_argument("--resume", action="store_true", help="continue the run of RUN_DIR/state.pt")
    parser.add_argument("--run-dir", type=Path, help="state and log of the run (default: OUT without .pt + .run)")
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
    parser.add_argument("--samples-per-epoch", type=int, help="cells drawn per epoch (default: one per training cell)")
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
        store=args.store,
        out=args.out,
        cache_dir=args.cache_dir,
        jobs=args.jobs,
        arch=args.arch,
        pretrained=args.pretrained,
        init=args.init,
        patience=args.patience,
        resume=args.resume,
        run_dir=args.run_dir,
        size_px=args.size,
        epochs=args.epochs,
        refine_rounds=args.refine_rounds,
        refine_epochs=args.refine_epochs,
        cell_labels_from_truth=args.cell_labels_from_truth,
        max_fields=args.max_fields,
        val_fraction=args.val_fraction,
        batch_size=args.batch_size,
        samples_per_epoch=args.samples_per_epoch,
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
        train(config, segmenter=segmenter_spec(args) if args.data else None)
    except (InputError, CheckpointError, OSError) as error:
        print(error, file=sys.stderr)
        return 2
    except TrainingCancelled as error:
        print(error, file=sys.stderr)
        return 130
    return 0
