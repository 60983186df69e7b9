"""How a classifier ranks the true labels of the real four-channel HPA fields.

For every field of ../shared/data/real/hpa-4ch (`train.csv` gives its image-level labels) it
crops the cells, classifies them with the checkpoint and prints one markdown row per field:
- the rank of each true label among the 19 image-level probabilities (1 = the highest), in
  train.csv's order, and their mean;
- the share of cells whose top class is among the field's labels, with the probabilities as
  served (each cell blended with its field) and with the cell's own probabilities.
Cells are the masks of `hpa-4ch/masks/{ID}_hpa_cells.png` where the folder has them, else the
product's segmentation (`--segmentation`, classical by default); `--ignore-masks` segments every field.

The three fields are a check of behaviour on real images, not a data set: nothing is tuned to them.

    .venv/bin/python -m bench.real_fields [--model CKPT] [--data DIR] [--segmentation classical] [--ignore-masks]
"""

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from bench.common import SHARED_DIR
from ml.classifier.predictor import Predictor
from ml.constants import CLASS_NAMES, DEFAULT_MODEL_PATH, DEFAULT_SEGMENTATION_BACKEND
from ml.crops import crop_cells
from ml.io import find_fields, read_field, read_labels_png
from ml.segmentation import BACKENDS, Segmenter

DEFAULT_DATA_DIR = SHARED_DIR / "data" / "real" / "hpa-4ch"


def read_labels_in_order(csv_path: Path) -> dict[str, tuple[int, ...]]:
    """`ID,Label` rows -> {ID: labels in the file's order}."""
    with open(csv_path, newline="") as handle:
        return {
            row["ID"]: tuple(int(v) for v in row["Label"].split("|") if v.strip()) for row in csv.DictReader(handle)
        }


def label_ranks(image_probabilities: np.ndarray, labels: tuple[int, ...]) -> list[int]:
    """Rank (1 = highest) of each label among the scores; ties count against the label."""
    return [int((image_probabilities >= image_probabilities[label]).sum()) for label in labels]


def top_in_labels(probabilities: np.ndarray, labels: tuple[int, ...]) -> float:
    """Share of rows whose highest class is one of `labels`; NaN without rows."""
    if len(probabilities) == 0:
        return float("nan")
    return float(np.isin(probabilities.argmax(axis=1), list(labels)).mean())


def evaluate_field(
    predictor: Predictor, paths: dict[str, Path], labels: tuple[int, ...], cells: np.ndarray | None, segmenter
) -> dict:
    field = read_field(paths)
    source = "mask"
    if cells is None:
        cells = segmenter(field).cell_labels
        source = segmenter.backend
    crops = crop_cells(field.stack(), cells, size_px=predictor.input_size_px)
    predictions = predictor.predict_cells(crops)
    return {
        "cells": len(crops.cell_ids),
        "cell_source": source,
        "ranks": label_ranks(predictions.image_probabilities, labels),
        "served_top": top_in_labels(predictions.final_probabilities, labels),
        "cell_top": top_in_labels(predictions.cell_probabilities, labels),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.real_fields", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_PATH, help="classifier checkpoint (.pt)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR, help="Kaggle-layout folder with train.csv")
    parser.add_argument(
        "--segmentation",
        choices=sorted(BACKENDS),
        default=DEFAULT_SEGMENTATION_BACKEND,
        help="for fields without masks",
    )
    parser.add_argument(
        "--ignore-masks", action="store_true", help="segment every field, even those with masks in DATA/masks"
    )
    args = parser.parse_args(argv)
    if not (args.data / "train.csv").is_file():
        print(f"{args.data} has no train.csv; pass --data with a Kaggle-layout folder.", file=sys.stderr)
        return 1
    if not args.model.is_file():
        print(f"The checkpoint {args.model} does not exist; pass --model with a .pt file.", file=sys.stderr)
        return 1
    predictor = Predictor.from_checkpoint(args.model, device="cpu")
    segmenter = Segmenter(args.segmentation)
    labels_by_id = read_labels_in_order(args.data / "train.csv")
    fields = find_fields(args.data)
    print(f"Model {predictor.name} ({args.model}) on {len(labels_by_id)} real fields of {args.data}.")
    print(
        "| field | labels | cells (from) | ranks of its true labels | mean rank | top class in labels: served | cell alone |"
    )
    print("| --- | --- | ---: | --- | ---: | ---: | ---: |")
    all_ranks = []
    for image_id, labels in labels_by_id.items():
        if image_id not in fields:
            print(f"| {image_id} | missing images | | | | | |")
            continue
        mask_path = args.data / "masks" / f"{image_id}_hpa_cells.png"
        cells = read_labels_png(mask_path) if mask_path.is_file() and not args.ignore_masks else None
        result = evaluate_field(predictor, fields[image_id], labels, cells, segmenter)
        all_ranks.extend(result["ranks"])
        names = ", ".join(f"{label} {CLASS_NAMES[label]}" for label in labels)
        print(
            f"| {image_id[:8]} | {names} | {result['cells']} ({result['cell_source']}) | {result['ranks']} | "
            f"{np.mean(result['ranks']):.2f} | {result['served_top']:.0%} | {result['cell_top']:.0%} |"
        )
    if all_ranks:
        print(f"\nMean rank over all {len(all_ranks)} true labels: {np.mean(all_ranks):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
