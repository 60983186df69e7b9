"""`python -m ml card CKPT [--out CARD.md]`: write the model card of a classifier checkpoint.

The card (`ml.training.card.model_card`) is read from the checkpoint alone; it goes beside the
checkpoint as `{name}.md` unless `--out` says otherwise (`-` prints it).
"""

import argparse
import sys
from pathlib import Path

from ml.checkpoints import CheckpointError
from ml.training.card import model_card


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="an hpaweb classifier checkpoint (.pt)")
    parser.add_argument("--out", help="where to write the card (default: beside the checkpoint, .md; - prints it)")


def run(args: argparse.Namespace) -> int:
    try:
        card = model_card(args.checkpoint)
    except CheckpointError as error:
        print(error, file=sys.stderr)
        return 2
    if args.out == "-":
        sys.stdout.write(card)
        return 0
    out = Path(args.out) if args.out else args.checkpoint.with_suffix(".md")
    out.write_text(card)
    print(f"Wrote {out}.", file=sys.stderr)
    return 0
