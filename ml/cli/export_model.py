"""`python -m ml export-model`: write a classifier checkpoint as a bioimage.io 0.5 package.

    python -m ml export-model CKPT --out MODEL.zip

The package (TorchScript weights, declared normalisation, test tensors made by the model, the
19 class names, the checkpoint's card) is validated with bioimageio.spec and its test re-run
before it replaces MODEL.zip; napari, deepImageJ, Ilastik or bioimageio.core can run it, and
`python -m ml import-model MODEL.zip` reads it back. A refusal prints its sentence and exits 2.
"""

import argparse
import sys
from pathlib import Path


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="hpaweb classifier checkpoint (.pt)")
    parser.add_argument("--out", type=Path, required=True, help="package zip to write")


def run(args: argparse.Namespace) -> int:
    from ml.bioimageio.export import export_checkpoint

    try:
        written = export_checkpoint(args.checkpoint, args.out)
    except (ValueError, OSError) as error:  # ModelImportError and CheckpointError are ValueErrors
        print(error, file=sys.stderr)
        return 2
    print(f"Wrote the bioimage.io package {written}.", file=sys.stderr)
    return 0
