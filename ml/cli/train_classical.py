"""`python -m ml train-classical`: a classical classifier (texture features, cubic SVM or random forest).

    python -m ml train-classical --data DIR --out model.skops [--estimator svm|forest] [--features all]

Reads the training folder of `python -m ml train` (train.csv and {ID}_{channel}.png; with
`--cell-labels-from-truth` the true cells of a synthetic folder and solution.csv), trains on the
cells with one label (`ml.classical.training`) and writes a `.skops` file that the product runs
like any classifier (`--model` of `python -m ml predict`, the Models page, POST /api/models/).
"""

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from ml.classical.classifier import ESTIMATORS, SUFFIX, save_classical
from ml.classical.features import FEATURE_SETS
from ml.classical.training import gather_cells, train_classical
from ml.cli.options import add_segmentation_arguments, build_segmenter
from ml.io import InputError


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="Kaggle-layout folder with train.csv")
    parser.add_argument("--out", type=Path, required=True, help=f"classifier file to write ({SUFFIX})")
    parser.add_argument("--estimator", choices=ESTIMATORS, default="svm", help="svm (cubic kernel) or forest")
    parser.add_argument("--features", choices=FEATURE_SETS, default="all", help="texture features of the protein")
    parser.add_argument("--name", help="the model's name (default: the output file's stem)")
    parser.add_argument(
        "--cell-labels-from-truth",
        action="store_true",
        help="train on the true cells and classes of DATA/truth and DATA/solution.csv (synthetic data)",
    )
    parser.add_argument("--max-fields", type=int, help="use only the first N fields of train.csv")
    parser.add_argument("--seed", type=int, default=0)
    add_segmentation_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if args.out.suffix != SUFFIX:
        print(f"The classifier file must end in {SUFFIX} (got {args.out.name}).", file=sys.stderr)
        return 2
    try:
        segmenter = None if args.cell_labels_from_truth else build_segmenter(args)
        cells = gather_cells(
            args.data,
            segmenter=segmenter,
            cell_labels_from_truth=args.cell_labels_from_truth,
            max_fields=args.max_fields,
            progress=lambda ids: tqdm(ids, desc="Cropping", unit="field", file=sys.stderr),
        )
        model = train_classical(
            cells, kind=args.estimator, feature_set=args.features, name=args.name or args.out.stem, seed=args.seed
        )
    except (InputError, ValueError, OSError) as error:
        print(error, file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_classical(args.out, model)
    print(
        f"Wrote {args.out}: {args.estimator} on {args.features} features, {model.data['cells']} cells, "
        f"training accuracy {model.metrics['train_accuracy']:.3f}.",
        file=sys.stderr,
    )
    return 0
