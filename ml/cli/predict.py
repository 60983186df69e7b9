"""`python -m ml predict`: segment and classify every field of a folder; write a Kaggle submission CSV.

One row per field ID of `--images`; every cell contributes one `label confidence mask` triple
per class. A field without cells gets an empty PredictionString.
"""

import argparse
import sys
from pathlib import Path

from ml import constants
from ml.classifier.loading import load_classifier
from ml.cli.options import add_segmentation_arguments, build_segmenter, find_input_fields, read_input_fields
from ml.encoding import SubmissionRow, prediction_string, rle_to_kaggle, write_submission
from ml.io import InputError
from ml.pipeline import analyse_field


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", type=Path, required=True, help="folder of {ID}_{channel}.png|tif files")
    parser.add_argument("--out", type=Path, required=True, help="submission CSV to write")
    parser.add_argument(
        "--model",
        type=Path,
        help=f"classifier checkpoint (default: {constants.DEFAULT_MODEL_PATH.name} when installed)",
    )
    add_segmentation_arguments(parser)


def run(args: argparse.Namespace) -> int:
    model_path = args.model or constants.DEFAULT_MODEL_PATH
    if args.model is None and not model_path.is_file():
        print(
            f"No trained model is installed ({model_path} does not exist); "
            "pass a checkpoint with --model PATH, for example one written by `python -m ml train`.",
            file=sys.stderr,
        )
        return 2
    try:
        fields = find_input_fields(args.images)
        predictor = load_classifier(model_path, device=args.device)
        segmenter = build_segmenter(args)
    except (ValueError, OSError) as error:  # InputError, CheckpointError and bad device names are ValueErrors
        print(error, file=sys.stderr)
        return 2
    rows = []
    try:
        for image_id, field in read_input_fields(fields, description="Predicting"):
            result = analyse_field(field, segmenter=segmenter, predictor=predictor)
            cells = [(rle_to_kaggle(cell.mask_rle), cell.probabilities) for cell in result.cells]
            rows.append(SubmissionRow(image_id, result.width, result.height, prediction_string(cells)))
    except InputError as error:
        print(error, file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_submission(args.out, rows)
    print(f"Wrote {len(rows)} row(s) to {args.out} with model {predictor.name}.", file=sys.stderr)
    return 0
