"""Loading any classifier the product can run from a path, whatever its format."""

from pathlib import Path

from ml.classifier.base import CellClassifierModel
from ml.classifier.predictor import Predictor


def load_classifier(path: str | Path, *, device: str = "auto", batch_size: int = 256) -> CellClassifierModel:
    """The classifier at `path`: an hpaweb checkpoint (`.pt`)."""
    return Predictor.from_checkpoint(path, device=device, batch_size=batch_size)
