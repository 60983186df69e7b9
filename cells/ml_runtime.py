"""The models a process uses, loaded once and reused by every field it processes.

This is the one place where Django settings meet `ml`: settings are read here and passed
to the library as plain arguments.
"""

import functools
import logging
from pathlib import Path

from django.conf import settings

from ml.classifier.predictor import Predictor
from ml.segmentation import Segmenter

logger = logging.getLogger(__name__)


@functools.cache
def get_segmenter(backend: str) -> Segmenter:
    _limit_threads()
    return Segmenter(
        backend,
        nuclei_weights=settings.ML_NUCLEI_WEIGHTS or None,
        cell_weights=settings.ML_CELL_WEIGHTS or None,
        device=settings.ML_DEVICE,
    )


@functools.cache
def get_predictor() -> Predictor | None:
    """The installed classifier, or None when no trained model is installed."""
    _limit_threads()
    path = Path(settings.ML_MODEL_PATH) if settings.ML_MODEL_PATH else None
    if path is None or not path.is_file():
        logger.warning("No trained model at %s: fields are segmented but not classified.", path)
        return None
    return Predictor.from_checkpoint(path, device=settings.ML_DEVICE)


def installed_model_name() -> str | None:
    path = Path(settings.ML_MODEL_PATH) if settings.ML_MODEL_PATH else None
    return path.stem if path is not None and path.is_file() else None


@functools.cache
def _limit_threads() -> None:
    if settings.ML_TORCH_THREADS > 0:
        import torch

        torch.set_num_threads(settings.ML_TORCH_THREADS)
