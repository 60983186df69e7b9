"""Per-field classification time of the shipped model exported to bioimage.io and imported, against the native model.

The shipped checkpoint is written as a bioimage.io package (`python -m ml export-model`: TorchScript
weights, declared normalisation), imported back (`ml.bioimageio.import_classifier`), and both
classifiers run `predict_cells` on the cell crops of the same synthetic fields, alternating, in one
run; each time is the best of `--repeats`, so other work on a shared machine weighs less. Prints a
markdown table with the ratio (target: within 10 %) and the largest probability difference.

    .venv/bin/python -m bench.bioimageio [--fields 3] [--size 1024] [--repeats 5] [--threads 2]
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import markdown_table, synthetic_fields
from ml.bioimageio import import_classifier
from ml.bioimageio.export import export_checkpoint
from ml.classifier.predictor import Predictor
from ml.constants import DEFAULT_MODEL_PATH
from ml.crops import crop_cells
from ml.io import read_field, read_labels_png


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.bioimageio", description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=3, help="synthetic fields to classify")
    parser.add_argument("--size", type=int, default=1024, help="side of each synthetic field, px")
    parser.add_argument("--repeats", type=int, default=5, help="runs per field and model; the best counts")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    return parser


def field_crops(*, count: int, size_px: int, crop_px: int) -> list:
    crops = []
    for paths in synthetic_fields(count=count, size_px=size_px):
        green = Path(paths["green"])
        image_id = green.name.removesuffix("_green.png")
        cell_labels = read_labels_png(green.parent / "truth" / f"{image_id}_cells.png")
        crops.append((image_id, crop_cells(read_field(paths).stack(), cell_labels, size_px=crop_px)))
    return crops


def best_seconds(classifier, crops, *, repeats: int) -> float:
    classifier.predict_cells(crops)  # warm-up
    durations_s = []
    for _ in range(repeats):
        started = time.perf_counter()
        classifier.predict_cells(crops)
        durations_s.append(time.perf_counter() - started)
    return min(durations_s)


def main(argv: list[str] | None = None) -> None:
    args = get_args_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    native = Predictor.from_checkpoint(DEFAULT_MODEL_PATH, device="cpu")
    with tempfile.TemporaryDirectory() as workdir:
        package_path = export_checkpoint(DEFAULT_MODEL_PATH, Path(workdir) / "shipped.zip")
        imported = import_classifier(package_path, device="cpu")
    rows = []
    native_total_s = imported_total_s = 0.0
    for image_id, crops in field_crops(count=args.fields, size_px=args.size, crop_px=native.input_size_px):
        native_s = best_seconds(native, crops, repeats=args.repeats)
        imported_s = best_seconds(imported, crops, repeats=args.repeats)
        difference = np.abs(
            native.predict_cells(crops).final_probabilities - imported.predict_cells(crops).final_probabilities
        ).max()
        native_total_s += native_s
        imported_total_s += imported_s
        rows.append(
            [image_id, str(len(crops)), f"{native_s * 1000:.1f}", f"{imported_s * 1000:.1f}",
             f"{imported_s / native_s:.3f}", f"{difference:.1e}"]
        )  # fmt: skip
    rows.append(["all", "", f"{native_total_s * 1000:.1f}", f"{imported_total_s * 1000:.1f}",
                 f"{imported_total_s / native_total_s:.3f}", ""])  # fmt: skip
    print(
        f"Shipped model {native.name}: native checkpoint against its bioimage.io export (TorchScript), "
        f"CPU, {args.threads} thread(s), best of {args.repeats}.\n"
    )
    print(
        markdown_table(["field", "cells", "native ms", "bioimage.io ms", "ratio", "max |diff|"], rows, align="lrrrrr")
    )


if __name__ == "__main__":
    main()
