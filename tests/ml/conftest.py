"""Fixtures of the `ml` tests: a drawn field and a tiny classifier checkpoint."""

from pathlib import Path

import pytest

from ml.checkpoints import save_classifier_checkpoint
from ml.classifier.network import CellClassifier
from tests.ml.support import TINY_CONFIG, DrawnField, draw_field


@pytest.fixture
def drawn_field() -> DrawnField:
    return draw_field()


@pytest.fixture
def tiny_checkpoint(tmp_path) -> Path:
    """An untrained classifier small enough to run in milliseconds, saved as a checkpoint."""
    path = tmp_path / "tiny-model.pt"
    save_classifier_checkpoint(
        path,
        model=CellClassifier(widths=TINY_CONFIG["widths"], dropout=TINY_CONFIG["dropout"]),
        config=TINY_CONFIG,
        metrics={"val_map": 0.25},
        data={"images": 3},
    )
    return path
