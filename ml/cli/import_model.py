"""`python -m ml import-model`: check a bioimage.io package (or a checkpoint) and describe it.

    python -m ml import-model PATH [--mapping JSON] [--out DIR] [--device cpu]

PATH is a bioimage.io package (zip, folder or rdf.yaml) or an hpaweb checkpoint (.pt). A package
is validated, must reproduce its own test outputs, and is described as the product will run
it; `--mapping` (JSON, or a JSON file: output index -> HPA class name) maps a classifier's
outputs onto the HPA classes where its class names cannot be read. With `--out`, the checked
package (or checkpoint) is stored in DIR. Any refusal prints its sentence and exits 2, storing
nothing.
"""

import argparse
import shutil
import sys
from pathlib import Path

from ml.classifier.base import ModelDescription
from ml.classifier.loading import CHECKPOINT_SUFFIX, load_classifier


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, help="bioimage.io package (zip, folder, rdf.yaml) or checkpoint (.pt)")
    parser.add_argument("--mapping", help='class mapping: JSON such as {"0": "Nucleoplasm"}, or a JSON file')
    parser.add_argument("--out", type=Path, help="folder to store the checked model in")
    parser.add_argument("--device", default="cpu", help="device the test runs on: cpu, cuda or cuda:N")


def run(args: argparse.Namespace) -> int:
    try:
        if args.path.suffix == CHECKPOINT_SUFFIX and args.path.is_file():
            description = load_classifier(args.path, device=args.device).description
            stored = _store_checkpoint(args.path, args.out) if args.out else None
        else:
            description, stored = _import_package(args)
    except (ValueError, OSError) as error:  # ModelImportError and CheckpointError are ValueErrors
        print(error, file=sys.stderr)
        return 2
    print(describe(description))
    if stored is not None:
        print(f"Stored the checked model as {stored}.", file=sys.stderr)
    return 0


def _import_package(args: argparse.Namespace) -> tuple[ModelDescription, Path | None]:
    from ml.bioimageio import check_package, open_package, parse_class_mapping, store_package

    mapping = None
    if args.mapping:
        mapping_path = Path(args.mapping)
        text = mapping_path.read_text(encoding="utf-8") if mapping_path.suffix == ".json" else args.mapping
        mapping = parse_class_mapping(text)
    with open_package(args.path) as package:
        description = check_package(package, class_mapping=mapping, device=args.device)
        stored = store_package(package, args.out) if args.out else None
    return description, stored


def _store_checkpoint(path: Path, destination: Path) -> Path:
    destination.mkdir(parents=True, exist_ok=True)
    target = destination / path.name
    staged = destination / f".{path.name}.tmp"
    shutil.copyfile(path, staged)
    staged.replace(target)
    return target


def describe(description: ModelDescription) -> str:
    """The lines a user reads about a model: name, version, format, kind, input, classes, summary."""
    classes = ", ".join(description.class_names) if description.class_names else "none (not a classifier)"
    return "\n".join(
        [
            f"name: {description.name}",
            f"version: {description.version}",
            f"format: {description.format} ({description.architecture})",
            f"kind: {description.kind}",
            f"input: {description.input_size_px} x {description.input_size_px} px",
            f"classes ({len(description.class_names)}): {classes}",
            f"summary: {description.summary}",
        ]
    )
