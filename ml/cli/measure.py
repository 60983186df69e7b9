"""`python -m ml measure`: per-cell measurements and quality-control flags of every field of a folder, as CSV.

Each field is segmented (or its labels are read from `--labels DIR`: `{ID}_cells.png` and
`{ID}_nuclei.png`, as `python -m ml segment` writes them) and every cell measured (`ml.measure`:
shape, intensity per channel, Haralick and LBP textures, with `--scattering` the 417 wavelet
scattering coefficients) and flagged (`ml.qc`, thresholds from the `--qc-*` options). One row per
cell: `ID`, `cell_id`, `qc_flags` (joined by |), then every measurement (empty where it does not
apply, such as a missing channel).
"""

import argparse
import csv
import dataclasses
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np

from ml.cli.options import (
    add_channel_map_argument,
    add_segmentation_arguments,
    build_segmenter,
    find_input_fields,
    parse_channel_map,
    read_input_fields,
)
from ml.io import FieldImages, InputError, nucleus_diameter_from, read_labels_png
from ml.measure import measure_cells, measurement_names
from ml.qc import QcThresholds, qc_flags

ID_COLUMNS: tuple[str, ...] = ("ID", "cell_id", "qc_flags")


def add_qc_arguments(parser: argparse.ArgumentParser) -> None:
    """`--qc-<name>` for every threshold of `ml.qc.QcThresholds` (its default when not given)."""
    defaults = QcThresholds()
    for item in fields(QcThresholds):
        parser.add_argument(
            f"--qc-{item.name.replace('_', '-')}",
            dest=f"qc_{item.name}",
            type=int if isinstance(getattr(defaults, item.name), int) else float,
            default=getattr(defaults, item.name),
            help=f"quality control: {item.name.replace('_', ' ')} (default {getattr(defaults, item.name)})",
        )


def add_scale_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pixel-size-um", type=float, help="microns per pixel (sets the segmentation's scale)")
    parser.add_argument("--nucleus-diameter-px", type=float, help="typical nucleus diameter in pixels (overrides it)")


def with_scale(field: FieldImages, args: argparse.Namespace) -> FieldImages:
    """The field with the scale the options give (unchanged without one: the scale is estimated)."""
    scale = nucleus_diameter_from(pixel_size_um=args.pixel_size_um, nucleus_diameter_px=args.nucleus_diameter_px)
    return dataclasses.replace(field, nucleus_diameter_px=scale) if scale is not None else field


def qc_thresholds_from(args: argparse.Namespace) -> QcThresholds:
    return QcThresholds(**{item.name: getattr(args, f"qc_{item.name}") for item in fields(QcThresholds)})


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--images", type=Path, required=True, help="folder of {ID}_{channel}.png|tif or {ID}.ome.tif files"
    )
    parser.add_argument("--out", type=Path, required=True, help="features CSV to write")
    parser.add_argument(
        "--labels", type=Path, help="folder of {ID}_cells.png and {ID}_nuclei.png to measure instead of segmenting"
    )
    parser.add_argument("--no-texture", action="store_true", help="leave out Haralick and LBP")
    parser.add_argument("--scattering", action="store_true", help="add the 417 wavelet scattering coefficients")
    add_qc_arguments(parser)
    add_scale_arguments(parser)
    add_channel_map_argument(parser)
    add_segmentation_arguments(parser)


def run(args: argparse.Namespace) -> int:
    try:
        fields_found = find_input_fields(args.images)
        channel_map = parse_channel_map(args.channel_map)
        thresholds = qc_thresholds_from(args)
        nucleus_diameter_from(pixel_size_um=args.pixel_size_um, nucleus_diameter_px=args.nucleus_diameter_px)
        segmenter = None if args.labels is not None else build_segmenter(args)
    except (ValueError, OSError) as error:
        print(error, file=sys.stderr)
        return 2
    texture = not args.no_texture
    names = measurement_names(texture=texture, scattering=args.scattering)
    rows = []
    try:
        for image_id, field in read_input_fields(fields_found, description="Measuring", channel_map=channel_map):
            if args.labels is not None:
                cell_labels, nuclei_labels = _read_labels(args.labels, image_id)
            else:
                segmentation = segmenter(with_scale(field, args))
                cell_labels, nuclei_labels = segmentation.cell_labels, segmentation.nuclei_labels
            measurements = measure_cells(field, cell_labels, nuclei_labels, texture=texture, scattering=args.scattering)
            flags = qc_flags(measurements, thresholds)
            for index, cell_id in enumerate(measurements.cell_ids):
                values = ("" if np.isnan(value) else f"{value:.6g}" for value in measurements.values[index])
                rows.append([image_id, str(int(cell_id)), "|".join(flags[index]), *values])
    except InputError as error:
        print(error, file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow([*ID_COLUMNS, *names])
        writer.writerows(rows)
    print(f"Wrote {len(rows)} cell row(s) of {len(names)} measurements to {args.out}.", file=sys.stderr)
    return 0


def _read_labels(folder: Path, image_id: str) -> tuple[np.ndarray, np.ndarray]:
    paths = [folder / f"{image_id}_{kind}.png" for kind in ("cells", "nuclei")]
    missing = [path.name for path in paths if not path.is_file()]
    if missing:
        raise InputError(
            f"Field {image_id}: {missing[0]} is not in {folder}; write the labels with `python -m ml segment` "
            "or leave --labels out to segment the field."
        )
    cell_labels, nuclei_labels = (read_labels_png(path) for path in paths)
    return cell_labels, nuclei_labels
