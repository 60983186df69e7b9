"""`python -m ml COMMAND ...`: one entry point, each command implemented by its own module.

Each command is a module of this package exposing `configure_parser(parser)` and `run(args) -> int`,
the only place argparse lives; the library takes typed arguments. A module is imported
only when its command runs, so `python -m ml segment` never loads the training code.
"""

import argparse
import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "predict": ("ml.cli.predict", "Segment and classify every field of a folder; write a Kaggle submission CSV."),
    "segment": ("ml.cli.segment", "Write nucleus and cell label images for every field of a folder."),
    "synth": ("ml.cli.synth", "Generate synthetic HPA-like fields with per-cell truth."),
    "evaluate": ("ml.cli.evaluate", "Score a submission CSV against a solution CSV (competition mAP)."),
    "train": ("ml.cli.train", "Train the per-cell classifier from image-level labels."),
    "prepare": ("ml.cli.prepare", "Segment and crop every field of a folder into a cell store for training."),
    "fetch-hpa": ("ml.cli.fetch_hpa", "Download public HPA Cell Atlas fields listed in a labels CSV."),
    "card": ("ml.cli.card", "Write the model card (Markdown) of a classifier checkpoint."),
    "fit-familiarity": ("ml.cli.fit_familiarity", "Describe a classifier's training cells in its checkpoint."),
    "convert-hpa-weights": ("ml.cli.convert_hpa_weights", "Convert an official HPA segmentation weight file."),
    "train-seg": ("ml.cli.train_seg", "Train or fine-tune the segmentation U-Net on label images."),
    "import-model": ("ml.cli.import_model", "Check a bioimage.io package (or a checkpoint) against its own test."),
    "export-model": ("ml.cli.export_model", "Write a classifier checkpoint as a bioimage.io 0.5 package."),
    "measure": (
        "ml.cli.measure",
        "Measure every cell of a folder's fields (shape, intensity, texture, QC flags); CSV.",
    ),
    "train-classical": (
        "ml.cli.train_classical",
        "Train a classical classifier (SVM or random forest on texture features) from training folders.",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ml", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_module, help_text) in COMMANDS.items():
        subparsers.add_parser(name, help=help_text, description=help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if not argv or argv[0] not in COMMANDS:
        parser.parse_args(argv)  # prints usage and exits
        return 2
    name = argv[0]
    module = importlib.import_module(COMMANDS[name][0])
    command_parser = argparse.ArgumentParser(prog=f"python -m ml {name}", description=COMMANDS[name][1])
    module.configure_parser(command_parser)
    args = command_parser.parse_args(argv[1:])
    return int(module.run(args) or 0)
