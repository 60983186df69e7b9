"""Time of the HPA post-processing (`label_nuclei`, `label_cell`) on the 2048 px reference fixtures.

Prints a markdown table: median and maximum over several runs per fixture (after a warm-up
run), and the sum of the medians as a share of the reference implementation's time on this
project's 2-core machines (hpacellseg at numpy 2.4 / scikit-image 0.26: label_nuclei 0.26 s,
label_cell 4.2 s on the clean fixture, README.txt section 4 of the reference data). The load
average is printed too: timings on a shared machine are noisy.

The flooding loop is the compiled one (`ml/segmentation/hpa/_flood.so`, built by `make venv`) when
it is there; `--scikit-image-loop` times the fallback, scikit-image's own loop, instead.

    .venv/bin/python -m bench.postprocess [--repeats 5] [--scikit-image-loop]
"""

import argparse
import functools
import os
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

from bench.common import SHARED_DIR
from ml.segmentation.hpa import flood
from ml.segmentation.hpa.postprocess import label_cell, label_nuclei

FIXTURES = SHARED_DIR / "hpacellseg" / "label_fixtures"
VARIANTS = ("clean", "noisy", "touching")
REFERENCE_S = {"label_nuclei": 0.26, "label_cell": 4.2}
TARGET_SHARE = 0.2


def durations_s(run: Callable[[], object], *, repeats: int) -> list[float]:
    run()  # warm-up
    durations = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        durations.append(time.perf_counter() - started)
    return durations


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.postprocess", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per fixture and function")
    parser.add_argument("--scikit-image-loop", action="store_true", help="time the fallback flooding loop")
    args = parser.parse_args()
    if not FIXTURES.is_dir():
        print(f"The reference fixtures are not at {FIXTURES}; nothing to time.", file=sys.stderr)
        return 1
    if args.scikit_image_loop:
        flood.compiled_library = lambda: None
    compiled = flood.compiled_library() is not None
    reference_total_s = sum(REFERENCE_S.values())
    loop = "compiled (ml/segmentation/hpa/_flood.so)" if compiled else "scikit-image's"
    print(f"flooding loop: {loop}")
    print(f"load average before: {' '.join(f'{value:.2f}' for value in os.getloadavg())}\n")
    print(
        "| fixture | label_nuclei median / max (s) | label_cell median / max (s) | together, median (s) | share of the reference |"
    )
    print("|---|---|---|---|---|")
    for variant in VARIANTS:
        inputs = np.load(FIXTURES / f"{variant}_inputs.npz")
        nuclei_pred, cell_pred = inputs["nuclei_pred"], inputs["cell_pred"]
        nuclei_s = durations_s(functools.partial(label_nuclei, nuclei_pred), repeats=args.repeats)
        cell_s = durations_s(functools.partial(label_cell, nuclei_pred, cell_pred), repeats=args.repeats)
        together_s = statistics.median(nuclei_s) + statistics.median(cell_s)
        print(
            f"| {variant} | {statistics.median(nuclei_s):.3f} / {max(nuclei_s):.3f} "
            f"| {statistics.median(cell_s):.3f} / {max(cell_s):.3f} "
            f"| {together_s:.3f} | {together_s / reference_total_s:.2f} |"
        )
    print(
        f"\nReference: {REFERENCE_S['label_nuclei']} s + {REFERENCE_S['label_cell']} s = {reference_total_s:.2f} s "
        f"per field; target share at most {TARGET_SHARE}."
    )
    print(f"load average after: {' '.join(f'{value:.2f}' for value in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
