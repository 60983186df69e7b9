"""Fixtures of the `ml` tests: a drawn field and a tiny classifier checkpoint."""

from pathlib import Path

import pytest

from tests.ml.support import DrawnField, draw_field, save_tiny_classifier


@pytest.fixture
def drawn_field() -> DrawnField:
    return draw_field()


@pytest.fixture
def tiny_checkpoint(tmp_path) -> Path:
    """An untrained classifier small enough to run in milliseconds, saved as a checkpoint."""
    return save_tiny_classifier(tmp_path / "tiny-model.pt")
