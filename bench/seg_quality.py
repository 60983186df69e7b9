"""Segmentation quality on the real HPA fields in ../shared/data/real.

Prints a markdown table: per field, the channels used, nuclei and cell counts, F1 at IoU 0.5 and
mean matched IoU against the reference masks where a field has them, and the segmentation time.
Reference objects under 1,000 px are specks and are ignored (see the data README).

    .venv/bin/python -m bench.seg_quality [--data DIR] [--backend classical] [--overlay out.png]

Run it from the repository root.

`--overlay` writes the fields side by side with predicted cells (white), predicted nuclei (cyan)
and, where present, reference cells (magenta) outlined, for checking by eye.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.segmentation import find_boundaries
from skimage.transform import resize

from bench.common import SHARED_DIR
from ml.constants import CHANNELS, DEFAULT_SEGMENTATION_BACKEND
from ml.io import read_field, read_labels_png
from ml.render import render_preview
from ml.segmentation import Segmenter
from ml.segmentation.matching import match_labels

DEFAULT_DATA_DIR = SHARED_DIR / "data" / "real"
IOU_THRESHOLD = 0.5
MIN_REFERENCE_AREA_PX = 1000
REFERENCE_OUTLINE_RGB = (255, 0, 255)
OVERLAY_SIDE_PX = 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.seg_quality", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR, help="folder of field-* folders")
    parser.add_argument("--backend", default=DEFAULT_SEGMENTATION_BACKEND, help="segmentation backend")
    parser.add_argument("--overlay", type=Path, help="write an outline overlay PNG here")
    args = parser.parse_args(argv)

    field_dirs = sorted(path for path in args.data.glob("*/") if (path / "blue.png").exists())
    if not field_dirs:
        print(f"No fields (folders with blue.png) under {args.data}; pass --data.", file=sys.stderr)
        return 1
    segmenter = Segmenter(args.backend)
    rows, panels = [], []
    for field_dir in field_dirs:
        channel_files = {name: field_dir / f"{name}.png" for name in CHANNELS}
        field = read_field({name: path for name, path in channel_files.items() if path.exists()})
        start = time.perf_counter()
        segmentation = segmenter(field)
        seconds = time.perf_counter() - start
        panel = render_preview(field, segmentation, max_side_px=OVERLAY_SIDE_PX)
        cells = [_count(segmentation.cell_labels), "", ""]
        nuclei = [_count(segmentation.nuclei_labels), "", ""]
        for name, predicted, scores in (
            ("nuclei_labels.png", segmentation.nuclei_labels, nuclei),
            ("cell_labels.png", segmentation.cell_labels, cells),
        ):
            if (field_dir / name).exists():
                reference = read_labels_png(field_dir / name)
                match = match_labels(
                    reference, predicted, iou_threshold=IOU_THRESHOLD, min_true_area_px=MIN_REFERENCE_AREA_PX
                )
                counts = f"{match.predicted_count} / {match.true_count}"
                scores[:] = [counts, f"{match.f1:.3f}", f"{match.mean_matched_iou:.3f}"]
                if name == "cell_labels.png":
                    _outline(panel, reference, REFERENCE_OUTLINE_RGB)
        rows.append([field_dir.name, "+".join(segmentation.channels_used), *nuclei, *cells, f"{seconds:.2f}"])
        panels.append(panel)

    header = ["field", "channels", "nuclei (pred / ref)", "nuclei F1@0.5", "nuclei IoU",
              "cells (pred / ref)", "cells F1@0.5", "cells IoU", "time s"]  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if args.overlay is not None:
        height = max(panel.shape[0] for panel in panels)
        padded = [np.pad(panel, ((0, height - panel.shape[0]), (0, 8), (0, 0))) for panel in panels]
        Image.fromarray(np.concatenate(padded, axis=1)).save(args.overlay)
        print(f"\nOverlay written to {args.overlay}")
    return 0


def _count(labels: np.ndarray) -> str:
    return str(int(np.count_nonzero(np.bincount(labels.ravel())[1:])))


def _outline(panel: np.ndarray, labels: np.ndarray, colour: tuple[int, int, int]) -> None:
    small = resize(labels, panel.shape[:2], order=0, preserve_range=True, anti_aliasing=False).astype(labels.dtype)
    panel[find_boundaries(small, mode="inner")] = colour


if __name__ == "__main__":
    sys.exit(main())
