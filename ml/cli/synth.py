"""`python -m ml synth`: write a synthetic data set with per-cell truth (see `ml.synth.writer`).

`python -m ml synth --out DIR --n-images N --seed S [--size PX] [--bit-depth 8|16] [--style v1|v2]`;
field i is drawn from (seed, i) alone, so the same options always write the same files. `--style v2`
draws the more realistic fields of `ml.synth.v2`; v1 (the default) is unchanged.
"""

import argparse
import time
from pathlib import Path

from ml.constants import CLASS_NAMES, MAX_SIDE_PX
from ml.synth import BIT_DEPTHS, MIN_SIZE_PX, REFERENCE_SIZE_PX, write_dataset
from ml.synth.writer import STYLES


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="folder to write (created if missing)")
    parser.add_argument("--n-images", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True, help="field i is drawn from (seed, i) alone")
    parser.add_argument("--size", type=int, default=REFERENCE_SIZE_PX, help="side of each square field in px")
    parser.add_argument("--bit-depth", type=int, choices=BIT_DEPTHS, default=8)
    parser.add_argument(
        "--style", choices=STYLES, default="v1", help="v1: the original generator; v2: closer to real HPA images"
    )


def run(args: argparse.Namespace) -> int:
    if args.n_images < 1:
        raise SystemExit("--n-images must be at least 1.")
    if args.size < MIN_SIZE_PX or args.size > MAX_SIDE_PX:
        # Larger fields could not be uploaded to the app.
        raise SystemExit(f"--size {args.size} is outside {MIN_SIZE_PX}..{MAX_SIDE_PX} px; choose a size in that range.")
    start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        print(f"\r{done}/{total} fields", end="", flush=True)

    write_dataset(
        args.out,
        n_images=args.n_images,
        seed=args.seed,
        size_px=args.size,
        bit_depth=args.bit_depth,
        progress=progress,
        style=args.style,
    )
    print(f"\nwrote {args.n_images} fields to {args.out} in {time.perf_counter() - start:.1f} s")
    print("classes:", ", ".join(f"{i} {name}" for i, name in enumerate(CLASS_NAMES)))
    return 0
