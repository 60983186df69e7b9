"""`python -m ml prepare`: segment and crop every field of a Kaggle-layout folder into a cell store.

    python -m ml prepare --data DIR --store STORE [--size 96] [--jobs N] [--segmentation unet ...]

Resumable: run it again after a crash and it skips the fields already in the store. The work is
`ml.training.prepare.prepare_store`; `python -m ml train --store STORE` trains from the result.
"""

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from ml.cli.options import add_segmentation_arguments, segmenter_spec
from ml.io import InputError
from ml.training.prepare import prepare_store


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="Kaggle-layout folder with train.csv")
    parser.add_argument("--store", type=Path, required=True, help="the cell store to fill (created if missing)")
    parser.add_argument("--size", type=int, default=96, help="crop side in px (the model input size)")
    parser.add_argument("--jobs", type=int, default=1, help="processes working side by side")
    parser.add_argument("--max-fields", type=int, help="only the first N fields of train.csv")
    parser.add_argument("--masks", type=Path, help="folder of ready cell label images {ID}_cells.png to use")
    add_segmentation_arguments(parser)


def run(args: argparse.Namespace) -> int:
    bars: list[tqdm] = []  # made at the first field, so an early refusal prints no bar

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, desc="Segmenting and cropping", unit="field", file=sys.stderr))
        bars[0].update(done - bars[0].n)

    try:
        report = prepare_store(
            args.data,
            args.store,
            size_px=args.size,
            segmenter=segmenter_spec(args),
            jobs=args.jobs,
            max_fields=args.max_fields,
            masks_dir=args.masks,
            progress=progress,
        )
    except (InputError, OSError) as error:
        for bar in bars:
            bar.close()
        print(error, file=sys.stderr)
        return 2
    for bar in bars:
        bar.close()
    for line in report.sentences():
        print(line, file=sys.stderr)
    return 0
