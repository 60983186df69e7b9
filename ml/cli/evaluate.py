"""`python -m ml evaluate`: score a submission CSV against a solution CSV (competition mAP).

Prints one line per class (AP, ground-truth count, TP, FP) and, on its last line, `mAP=0.xxxx`.
"""

import argparse
from pathlib import Path

from ml.encoding import read_submission
from ml.evaluate import IOU_THRESHOLD, format_scores, score


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--solution", type=Path, required=True, help="ground truth in the submission format")
    parser.add_argument("--submission", type=Path, required=True, help="predictions to score")
    parser.add_argument("--iou-threshold", type=float, default=IOU_THRESHOLD)


def run(args: argparse.Namespace) -> int:
    for path in (args.solution, args.submission):
        if not path.is_file():
            raise SystemExit(f"{path} does not exist; pass the path of a CSV file.")
    scores = score(read_submission(args.solution), read_submission(args.submission), iou_threshold=args.iou_threshold)
    print(format_scores(scores))
    return 0
