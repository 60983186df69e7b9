"""Resident memory of a process holding one loaded classifier against one holding three.

A worker that serves several registered models keeps each loaded (`ml.classifier.loading.
load_classifier`); this measures what that costs. Three copies of the shipped checkpoint (or
--model) are written under different names, and for one and for three of them a fresh Python
process imports `ml`, loads them, and classifies one batch of crops with each, its resident
memory (VmRSS) read after the imports, after loading and after classifying. Fresh processes, so
that nothing one measurement allocated is counted in the other. Target: three within 1.5x of one.

    .venv/bin/python -m bench.models_memory [--model PATH] [--cells 64] [--threads 2]
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import REPO_ROOT, markdown_table
from ml.constants import DEFAULT_MODEL_PATH

COUNTS = (1, 3)
TARGET_RATIO = 1.5
STAGES = ("after imports", "after loading", "after classifying")


def resident_mib() -> float:
    """This process's resident memory (VmRSS), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("/proc/self/status has no VmRSS.")


def hold(paths: list[Path], *, cells: int, threads: int) -> dict[str, float]:
    """In this process: load every classifier at `paths`, classify `cells` random crops with
    each; resident MiB at each of STAGES."""
    import numpy as np
    import torch

    from ml.classifier.loading import load_classifier
    from ml.crops import CellCrops

    torch.set_num_threads(threads)
    measured = {STAGES[0]: resident_mib()}
    classifiers = [load_classifier(path, device="cpu") for path in paths]
    measured[STAGES[1]] = resident_mib()
    for classifier in classifiers:
        size_px = classifier.description.input_size_px
        images = np.random.default_rng(0).random((cells, 4, size_px, size_px), dtype=np.float32)
        crops = CellCrops(
            cell_ids=np.arange(1, cells + 1),
            bboxes=np.zeros((cells, 4), dtype=np.int64),
            areas_px=np.ones(cells, dtype=np.int64),
            images=images,
        )
        classifier.predict_cells(crops)
    measured[STAGES[2]] = resident_mib()
    return measured


def measure_in_fresh_process(paths: list[Path], *, cells: int, threads: int) -> dict[str, float]:
    command = [sys.executable, "-m", "bench.models_memory", "--cells", str(cells), "--threads", str(threads)]
    done = subprocess.run(
        [*command, "--hold", *map(str, paths)], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.models_memory", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_PATH, help="classifier checkpoint to copy")
    parser.add_argument("--cells", type=int, default=64, help="crops each classifier classifies once")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    parser.add_argument("--hold", type=Path, nargs="+", help=argparse.SUPPRESS)  # the measured child process
    args = parser.parse_args(argv)
    if args.hold:
        print(json.dumps(hold(args.hold, cells=args.cells, threads=args.threads)))
        return 0

    with tempfile.TemporaryDirectory() as folder:
        copies = [Path(folder) / f"{args.model.stem}-copy-{index}.pt" for index in range(max(COUNTS))]
        for copy in copies:
            shutil.copyfile(args.model, copy)
        measured = {
            count: measure_in_fresh_process(copies[:count], cells=args.cells, threads=args.threads) for count in COUNTS
        }
    one, three = measured[1], measured[3]
    rows = [[stage, f"{one[stage]:.1f}", f"{three[stage]:.1f}", f"{three[stage] / one[stage]:.3f}"] for stage in STAGES]
    held_one = one[STAGES[2]] - one[STAGES[0]]
    held_three = three[STAGES[2]] - three[STAGES[0]]
    rows.append(["classifiers' own share (classifying - imports)", f"{held_one:.1f}", f"{held_three:.1f}", "-"])
    print(f"## Resident memory, 1 vs 3 loaded classifiers ({args.model.name} copies, CPU, {args.cells} crops each)\n")
    print(markdown_table(["process", "1 classifier, MiB", "3 classifiers, MiB", "ratio"], rows, align="lrrr"))
    ratio = three[STAGES[2]] / one[STAGES[2]]
    verdict = "within" if ratio <= TARGET_RATIO else "NOT within"
    print(
        f"\nThree classifiers take {ratio:.2f}x the memory of one after classifying: {verdict} the {TARGET_RATIO}x target."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
