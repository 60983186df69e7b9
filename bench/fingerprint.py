"""Fingerprints of the product's results, to show a change leaves them bit-identical.

Runs the command line on the real fields of ../shared/data/real (the three four-channel HPA
fields, field-b1 and field-c1) and on two synthetic sets (8-bit 1024 px and 16-bit 768 px):
`python -m ml synth`, `python -m ml segment` (label images), `python -m ml predict` (submission
CSV) with the shipped model, and the per-cell and field-level probabilities through the library,
then writes the SHA-256 of every output to OUT/SHA256SUMS. Run it on two commits and compare:

    .venv/bin/python -m bench.fingerprint --out var/fingerprint-new
    diff var/fingerprint-old/SHA256SUMS var/fingerprint-new/SHA256SUMS
"""

import argparse
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from bench.common import REPO_ROOT, SHARED_DIR
from ml.classifier.predictor import Predictor
from ml.constants import DEFAULT_MODEL_PATH
from ml.io import find_fields, read_field
from ml.pipeline import analyse_field
from ml.segmentation import Segmenter

SYNTHETIC_SETS = {
    "synth": ["--n-images", "4", "--seed", "7", "--size", "1024"],
    "synth16": ["--n-images", "2", "--seed", "3", "--size", "768", "--bit-depth", "16"],
}


def copy_real_fields(real_dir: Path, out_dir: Path) -> None:
    """Kaggle layout for every real field; field-b1 and field-c1 come as bare blue.png and green.png."""
    out_dir.mkdir(parents=True)
    for path in (real_dir / "hpa-4ch").glob("*_*.png"):
        shutil.copy(path, out_dir / path.name)
    for name in ("field-b1", "field-c1"):
        for channel in ("blue", "green"):
            shutil.copy(real_dir / name / f"{channel}.png", out_dir / f"{name}_{channel}.png")


def run_command(*arguments: str) -> None:
    subprocess.run([sys.executable, "-m", "ml", *arguments], check=True, cwd=REPO_ROOT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fingerprint", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the outputs and SHA256SUMS (emptied first)")
    parser.add_argument("--real", type=Path, default=SHARED_DIR / "data" / "real", help="the real fields")
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    shutil.rmtree(out, ignore_errors=True)
    inputs = out / "inputs"
    copy_real_fields(args.real, inputs / "real")
    for name, options in SYNTHETIC_SETS.items():
        run_command("synth", "--out", str(inputs / name), *options)
    predictor = Predictor.from_checkpoint(DEFAULT_MODEL_PATH, device="cpu")
    segmenter = Segmenter("classical")
    for name in ("real", *SYNTHETIC_SETS):
        run_command("segment", "--images", str(inputs / name), "--out", str(out / name / "labels"))
        run_command("predict", "--images", str(inputs / name), "--out", str(out / name / "submission.csv"))
        for image_id, paths in sorted(find_fields(inputs / name).items()):
            result = analyse_field(read_field(paths), segmenter=segmenter, predictor=predictor)
            cells = np.array([cell.probabilities for cell in result.cells], dtype=np.float64)
            np.save(out / name / f"{image_id}_probabilities.npy", cells)
            np.save(out / name / f"{image_id}_image_probabilities.npy", np.array(result.image_probabilities))
    # The real inputs are copies of shared files; everything else (synthetic inputs included) is output.
    outputs = sorted(p for p in out.rglob("*") if p.is_file() and not p.is_relative_to(inputs / "real"))
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(out)}" for p in outputs]
    (out / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    print(f"{len(lines)} outputs fingerprinted in {out / 'SHA256SUMS'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
