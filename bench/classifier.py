"""Throughput of the per-cell stages on the CPU: RLE encoding, cropping and the classifier.

Prints markdown tables. Encoding and cropping run on the real field `field-b1` of
../shared/data/real (its reference cells) when present and on a drawn 2048 px field with 30
cells; the classifier runs at default widths on random crops for each input size and thread
count. Each number is the best of several runs, so other work on a shared machine weighs less.

    .venv/bin/python -m bench.classifier [--sizes 64 96 128] [--threads 1 2] [--batch-size 256]
"""

import argparse
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

from bench.common import SHARED_DIR
from ml.classifier.network import CellClassifier
from ml.crops import crop_cells
from ml.encoding import labels_to_rles
from ml.io import read_field, read_labels_png

REAL_FIELD_DIR = SHARED_DIR / "data" / "real" / "field-b1"
DRAWN_SIDE_PX = 2048
DRAWN_CELL_RADIUS_PX = 160


def best_seconds(run: Callable[[], object], *, repeats: int) -> float:
    run()  # warm-up: allocations, thread pools, lazy initialisation
    durations_s = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        durations_s.append(time.perf_counter() - started)
    return min(durations_s)


def drawn_field() -> tuple[np.ndarray, np.ndarray]:
    """(stack (4, H, W), cell labels) with 30 disk cells of radius 160 px on a 2048 px field."""
    rows, cols = np.mgrid[:DRAWN_SIDE_PX, :DRAWN_SIDE_PX]
    cell_labels = np.zeros((DRAWN_SIDE_PX, DRAWN_SIDE_PX), dtype=np.uint16)
    centres = [(row, col) for row in range(150, DRAWN_SIDE_PX, 350) for col in range(150, DRAWN_SIDE_PX, 350)][:30]
    for label, (row, col) in enumerate(centres, start=1):
        cell_labels[np.hypot(rows - row, cols - col) <= DRAWN_CELL_RADIUS_PX] = label
    stack = np.random.default_rng(0).random((4, DRAWN_SIDE_PX, DRAWN_SIDE_PX), dtype=np.float32)
    return stack, cell_labels


def field_rows(size_px: int) -> list[str]:
    fields = {"drawn 2048 px, 30 disks": drawn_field()}
    if REAL_FIELD_DIR.is_dir():
        field = read_field({"green": REAL_FIELD_DIR / "green.png", "blue": REAL_FIELD_DIR / "blue.png"})
        fields["real field-b1 (reference cells)"] = (field.stack(), read_labels_png(REAL_FIELD_DIR / "cell_labels.png"))
    rows = []
    for name, (stack, cell_labels) in fields.items():
        cell_count = len(np.unique(cell_labels)) - 1
        encoding_s = best_seconds(lambda: labels_to_rles(cell_labels), repeats=5)  # noqa: B023
        crops_s = best_seconds(lambda: crop_cells(stack, cell_labels, size_px=size_px), repeats=5)  # noqa: B023
        rows.append(
            f"| {name} | {cell_count} | {encoding_s * 1e3:.1f} | {crops_s * 1e3:.1f} | {cell_count / crops_s:.0f} |"
        )
    return rows


def classifier_crops_per_s(model: torch.nn.Module, *, size_px: int, batch_size: int) -> float:
    crops = torch.rand(batch_size, 4, size_px, size_px).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        seconds = best_seconds(lambda: model(crops), repeats=3)
    return batch_size / seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.classifier", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 128], help="crop sides in px")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch intra-op thread counts")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--crop-size", type=int, default=128, help="crop side for the cropping table")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    print(f"## Encoding and cropping (crops of {args.crop_size} px, one thread)\n")
    print("| field | cells | labels_to_rles ms | crop_cells ms | crops/s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for row in field_rows(args.crop_size):
        print(row)

    model = CellClassifier().eval().to(memory_format=torch.channels_last)
    size_mb = sum(tensor.numel() * tensor.element_size() for tensor in model.state_dict().values()) / 1e6
    print(f"\n## Classifier, default widths ({size_mb:.1f} MB float32), batch {args.batch_size}\n")
    print("| input px | " + " | ".join(f"crops/s, {threads} thread(s)" for threads in args.threads) + " |")
    print("| ---: | " + " | ".join("---:" for _ in args.threads) + " |")
    for size_px in args.sizes:
        rates = []
        for threads in args.threads:
            torch.set_num_threads(threads)
            rates.append(classifier_crops_per_s(model, size_px=size_px, batch_size=args.batch_size))
        print(f"| {size_px} | " + " | ".join(f"{rate:.0f}" for rate in rates) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
