"""`python -m ml predict`: segment and classify every field of a folder; write a Kaggle submission CSV.

One row per field ID of `--images`; every cell contributes one `label confidence mask` triple
per class. A field without cells gets an empty PredictionString.

With `--cells-csv`, also one row per cell (`CELL_COLUMNS`): its field, id, bounding box
(half-open), area, the 19 final probabilities under the class names, the most probable class,
how familiar the cell looks to the model and whether it is unfamiliar (0 or 1; both empty when
the model has no description of its training cells), the model's name and version, and the
quality-control flags (`ml.qc`): `qc_flags` (joined by |) and a 0/1 column `qc_<flag>` for each.
`--exclude-qc all` (or a comma-separated list of flags) leaves flagged cells out of the submission.
"""

import argparse
import csv
import sys
from pathlib import Path

from ml import constants
from ml.classifier.loading import load_classifier
from ml.cli.measure import add_qc_arguments, add_scale_arguments, qc_thresholds_from, with_scale
from ml.cli.options import (
    add_channel_map_argument,
    add_segmentation_arguments,
    build_segmenter,
    find_input_fields,
    parse_channel_map,
    read_input_fields,
)
from ml.encoding import SubmissionRow, prediction_string, rle_to_kaggle, write_submission
from ml.io import InputError, nucleus_diameter_from
from ml.pipeline import FieldResult, MeasureOptions, analyse_field
from ml.qc import QC_FLAGS

CELL_COLUMNS: tuple[str, ...] = (
    "ID",
    "cell_id",
    "min_row",
    "min_col",
    "max_row",
    "max_col",
    "area_px",
    *constants.CLASS_NAMES,
    "top_class",
    "familiarity",
    "unfamiliar",
    "model_name",
    "model_version",
    "qc_flags",
    *(f"qc_{flag}" for flag in QC_FLAGS),
)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--images", type=Path, required=True, help="folder of {ID}_{channel}.png|tif or {ID}.ome.tif files"
    )
    parser.add_argument("--out", type=Path, required=True, help="submission CSV to write")
    parser.add_argument(
        "--model",
        type=Path,
        help=f"classifier checkpoint (default: {constants.DEFAULT_MODEL_PATH.name} when installed)",
    )
    parser.add_argument("--cells-csv", type=Path, help="also write one row per cell to this CSV")
    parser.add_argument(
        "--exclude-qc",
        default="",
        help=f"leave cells with these quality-control flags out of the submission: all, or some of {','.join(QC_FLAGS)}",
    )
    add_qc_arguments(parser)
    add_scale_arguments(parser)
    add_channel_map_argument(parser)
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
        channel_map = parse_channel_map(args.channel_map)
        predictor = load_classifier(model_path, device=args.device)
        segmenter = build_segmenter(args)
        excluded = _excluded_flags(args.exclude_qc)
        thresholds = qc_thresholds_from(args)
        nucleus_diameter_from(pixel_size_um=args.pixel_size_um, nucleus_diameter_px=args.nucleus_diameter_px)
    except (ValueError, OSError) as error:  # InputError, CheckpointError and bad device names are ValueErrors
        print(error, file=sys.stderr)
        return 2
    rows, cell_rows = [], []
    try:
        for image_id, field in read_input_fields(fields, description="Predicting", channel_map=channel_map):
            # Quality control needs shape and intensity only; textures are `python -m ml measure`'s.
            measure = MeasureOptions(texture=False, qc=thresholds) if args.cells_csv or excluded else None
            result = analyse_field(with_scale(field, args), segmenter=segmenter, predictor=predictor, measure=measure)
            cells = [
                (rle_to_kaggle(cell.mask_rle), cell.probabilities)
                for cell in result.cells
                if not excluded.intersection(cell.qc_flags)
            ]
            rows.append(SubmissionRow(image_id, result.width, result.height, prediction_string(cells)))
            if args.cells_csv is not None:
                cell_rows += describe_cells(image_id, result)
    except InputError as error:
        print(error, file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_submission(args.out, rows)
    if args.cells_csv is not None:
        args.cells_csv.parent.mkdir(parents=True, exist_ok=True)
        with open(args.cells_csv, "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(CELL_COLUMNS)
            writer.writerows(cell_rows)
        print(f"Wrote {len(cell_rows)} cell row(s) to {args.cells_csv}.", file=sys.stderr)
    print(f"Wrote {len(rows)} row(s) to {args.out} with model {predictor.name}.", file=sys.stderr)
    return 0


def describe_cells(image_id: str, result: FieldResult) -> list[list[str]]:
    """The `CELL_COLUMNS` rows of a classified field's cells."""
    rows = []
    for cell in result.cells:
        probabilities = cell.probabilities
        top_class = constants.CLASS_NAMES[max(range(len(probabilities)), key=probabilities.__getitem__)]
        rows.append(
            [
                image_id,
                str(cell.cell_id),
                *(str(side) for side in cell.bbox),
                str(cell.area_px),
                *(f"{probability:.6g}" for probability in probabilities),
                top_class,
                "" if cell.familiarity is None else f"{cell.familiarity:.6g}",
                "" if cell.unfamiliar is None else str(int(cell.unfamiliar)),
                result.model.name,
                result.model.version,
                "|".join(cell.qc_flags),
                *(str(int(flag in cell.qc_flags)) for flag in QC_FLAGS),
            ]
        )
    return rows


def _excluded_flags(text: str) -> set[str]:
    names = {name.strip() for name in text.split(",") if name.strip()}
    if names == {"all"}:
        return set(QC_FLAGS)
    unknown = sorted(names - set(QC_FLAGS))
    if unknown:
        raise ValueError(
            f"--exclude-qc names {unknown[0]!r}, which is not a flag; use all or some of {', '.join(QC_FLAGS)}."
        )
    return names
