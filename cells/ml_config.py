"""The one place in cells/ where Django settings meet `ml`.

The `ML_*` settings and `HPAWEB_MAX_SIDE_PX` are read here and nowhere else in the app: services,
selectors and forms ask this module, and `ml` gets plain arguments. The models are loaded once
per process and reused by every field it processes.
"""

import functools
import logging
from pathlib import Path

from django.conf import settings

from ml.classifier.predictor import Predictor
from ml.segmentation import BACKENDS, Segmenter

logger = logging.getLogger(__name__)


def max_side_px() -> int:
    """The largest side, in pixels, of a field this installation accepts."""
    return settings.HPAWEB_MAX_SIDE_PX


def default_segmentation_backend() -> str:
    """The backend of a job that does not choose one."""
    return settings.ML_SEGMENTATION_BACKEND


def segmentation_backends() -> dict[str, bool]:
    """Every segmentation backend, and whether it can run here: unet needs both its weight files."""
    unet_weights = all(path and Path(path).is_file() for path in (settings.ML_NUCLEI_WEIGHTS, settings.ML_CELL_WEIGHTS))
    return {backend: backend != "unet" or unet_weights for backend in BACKENDS}


def classifier_path() -> Path | None:
    """The installed classifier checkpoint; None when none is configured or the file is missing."""
    path = Path(settings.ML_MODEL_PATH) if settings.ML_MODEL_PATH else None
    return path if path is not None and path.is_file() else None


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
    path = classifier_path()
    if path is None:
        logger.warning(
            "No trained model at %s: fields are segmented but not classified.", settings.ML_MODEL_PATH or None
        )
        return None
    return Predictor.from_checkpoint(path, device=settings.ML_DEVICE)


@functools.cache
def _limit_threads() -> None:
    if settings.ML_TORCH_THREADS > 0:
        import torch

        torch.set_num_threads(settings.ML_TORCH_THREADS)
