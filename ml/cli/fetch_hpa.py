"""`python -m ml fetch-hpa`: download public HPA Cell Atlas fields listed in a labels CSV.

    python -m ml fetch-hpa --labels TABLE.csv --out DIR [--classes 11 15 ...] [--per-class N] [--jobs 8] [--format tif|jpg]

The folder gets the Kaggle layout and a train.csv that `python -m ml train --data DIR` reads. The
work is `ml.fetch.hpa`; a rerun fetches only what is missing.
"""

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from ml.fetch.hpa import FORMATS, fetch_fields, parse_labels, read_public_table, select_fields
from ml.io import InputError


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--labels", type=Path, required=True, help="the HPA public-data table (Image, Label, Cellline)")
    parser.add_argument("--out", type=Path, required=True, help="folder to fill (Kaggle layout and train.csv)")
    parser.add_argument("--classes", nargs="+", help="only fields with one of these classes (indices or names)")
    parser.add_argument("--per-class", type=int, help="at most about N fields per class, rarest classes first")
    parser.add_argument("--jobs", type=int, default=8, help="downloads side by side")
    parser.add_argument("--format", choices=sorted(FORMATS), default="tif", help="tif (.tif.gz, 16-bit) or jpg")
    parser.add_argument("--attempts", type=int, default=4, help="tries per file before giving up")
    parser.add_argument("--backoff", type=float, default=1.0, help="seconds before the first retry, doubling")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a request may stall")


def run(args: argparse.Namespace) -> int:
    try:
        classes = parse_labels("|".join(args.classes), where="--classes") if args.classes else None
        fields = select_fields(read_public_table(args.labels), classes=classes, per_class=args.per_class)
    except InputError as error:
        print(error, file=sys.stderr)
        return 2
    bar = tqdm(total=4 * len(fields), desc="Downloading", unit="file", file=sys.stderr)
    report = fetch_fields(
        fields,
        args.out,
        jobs=args.jobs,
        file_format=args.format,
        attempts=args.attempts,
        backoff_s=args.backoff,
        timeout_s=args.timeout,
        progress=lambda done, total: bar.update(done - bar.n),
    )
    bar.close()
    for line in report.sentences():
        print(line, file=sys.stderr)
    return 1 if report.failures else 0
