"""Loading any classifier the product can run from a path, whatever its format."""

from collections.abc import Mapping
from pathlib import Path

from ml.classifier.base import CellClassifierModel
from ml.classifier.predictor import Predictor

CHECKPOINT_SUFFIX = ".pt"
CLASSICAL_SUFFIX = ".skops"  # ml.classical.classifier.SUFFIX, kept here so loading a checkpoint imports no sklearn


def load_classifier(
    path: str | Path,
    *,
    device: str = "auto",
    batch_size: int = 256,
    class_mapping: Mapping[int, str] | None = None,
) -> CellClassifierModel:
    """The classifier at `path`: an hpaweb checkpoint (`.pt`), a classical classifier (`.skops`, written by
    `python -m ml train-classical`), or a bioimage.io package.

    A package is a zip, a folder or its `rdf.yaml`; it is validated and must reproduce its own
    test outputs (`ml.bioimageio.import_classifier`). `class_mapping` (output index -> HPA
    class name) is for packages whose class names cannot be read; a checkpoint ignores it.
    Refusals raise a ValueError whose message says why (`CheckpointError`, `ModelImportError`).
    """
    path = Path(path)
    if path.suffix == CHECKPOINT_SUFFIX and path.is_file():
        return Predictor.from_checkpoint(path, device=device, batch_size=batch_size)
    if path.suffix == CLASSICAL_SUFFIX and path.is_file():
        # A skops file (never pickle): rebuilt from plain data, its trees checked (`ml.classical.classifier`).
        from ml.classical.classifier import ClassicalClassifier

        return ClassicalClassifier.from_file(path)
    # Imported only for packages, so loading a checkpoint never loads bioimageio.spec.
    from ml.bioimageio import import_classifier

    return import_classifier(path, class_mapping=class_mapping, device=device, batch_size=batch_size)
