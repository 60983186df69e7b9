"""The one place in cells/ where Django settings meet `ml`.

The `ML_*` settings and `HPAWEB_MAX_SIDE_PX` are read here and nowhere else in the app: services,
selectors and forms ask this module, and `ml` gets plain arguments. The models are loaded once
per process and reused by every field it processes.
"""

import functools
import logging
import shutil
import threading
from collections import OrderedDict
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from cells.models import RegisteredModel, segmenter_model_id
from ml.classifier.base import CellClassifierModel
from ml.classifier.loading import load_classifier
from ml.pipeline import MeasureOptions
from ml.qc import QcThresholds
from ml.segmentation import BACKENDS, Segmenter
from ml.segmentation.segmenter import PACKAGE_BACKEND

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
    """The process's segmenter for a job's backend: a builtin one, or a registered package pair ("model:<id>")."""
    _limit_threads()
    model_id = segmenter_model_id(backend)
    if model_id is not None:
        model = RegisteredModel.objects.filter(kind=RegisteredModel.Kind.SEGMENTER, pk=model_id).first()
        if model is None:
            raise ValueError(
                f"The segmentation model {model_id} this job was created with has been deleted; "
                "upload the field again with another segmentation."
            )
        return Segmenter(
            PACKAGE_BACKEND,
            nuclei_model=model_local_path(model),
            cell_model=model_local_path(model, cell_package=True),
            device=settings.ML_DEVICE,
        )
    return Segmenter(
        backend,
        nuclei_weights=settings.ML_NUCLEI_WEIGHTS or None,
        cell_weights=settings.ML_CELL_WEIGHTS or None,
        device=settings.ML_DEVICE,
    )


def qc_thresholds() -> QcThresholds:
    """The quality-control thresholds: `ml.qc`'s defaults, each replaced by its ML_QC_<NAME> setting."""
    try:
        return QcThresholds.from_mapping(settings.ML_QC_THRESHOLDS)
    except ValueError as error:
        raise ImproperlyConfigured(f"An ML_QC_ setting is wrong: {error}") from None


def measure_options() -> MeasureOptions:
    """What the worker measures per cell (ML_MEASURE_TEXTURE, ML_MEASURE_SCATTERING) and the QC thresholds."""
    return MeasureOptions(
        texture=settings.ML_MEASURE_TEXTURE, scattering=settings.ML_MEASURE_SCATTERING, qc=qc_thresholds()
    )


def private_models_allowed() -> bool:
    """Whether users who are not administrators may import models for themselves."""
    return settings.HPAWEB_PRIVATE_MODELS


def max_model_bytes() -> int:
    return settings.HPAWEB_MAX_MODEL_BYTES


def training_device() -> str:
    """Where training jobs run (ML_DEVICE: "auto", "cpu", "cuda", ...)."""
    return settings.ML_DEVICE


def training_threads() -> int:
    """CPU threads of a training job (ML_TORCH_THREADS; 2 when it is 0, i.e. unset)."""
    return settings.ML_TORCH_THREADS or 2


class _LoadedClassifiers:
    """The classifiers a process has loaded, least recently used first; at most `ML_MAX_LOADED_MODELS`.

    A worker that switches between models keeps each in memory instead of reloading it per field.
    """

    def __init__(self) -> None:
        self._models: OrderedDict[tuple[int, str], CellClassifierModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, model: RegisteredModel) -> CellClassifierModel:
        key = (model.pk, model.sha256)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
        loaded = load_classifier(model_local_path(model), device=settings.ML_DEVICE, **_load_options(model))
        with self._lock:
            self._models[key] = loaded
            self._models.move_to_end(key)
            while len(self._models) > max(1, settings.ML_MAX_LOADED_MODELS):
                self._models.popitem(last=False)
        return loaded

    def loaded(self) -> list[tuple[int, str]]:
        """(model id, sha256) of the loaded classifiers, least recently used first."""
        with self._lock:
            return list(self._models)

    def clear(self) -> None:
        with self._lock:
            self._models.clear()


loaded_classifiers = _LoadedClassifiers()


def get_classifier(model: RegisteredModel) -> CellClassifierModel:
    """The loaded classifier of a registry row, from this process's bounded cache."""
    _limit_threads()
    return loaded_classifiers.get(model)


def _load_options(model: RegisteredModel) -> dict:
    if model.format == RegisteredModel.Format.BIOIMAGEIO and model.class_mapping:
        return {"class_mapping": {int(index): name for index, name in model.class_mapping.items()}}
    return {}


def model_local_path(model: RegisteredModel, *, cell_package: bool = False) -> Path:
    """A local file of the model: the installation's own path, or a copy of the stored file kept by hash
    (so a worker reading from object storage fetches each model once). `cell_package`: a segmenter's
    cell package rather than its nucleus one."""
    if model.source_path:
        return Path(model.source_path)
    stored, sha256 = (model.cell_file, model.cell_sha256) if cell_package else (model.file, model.sha256)
    cached = Path(settings.VAR_DIR) / "model-cache" / f"{sha256}{Path(stored.name).suffix}"
    if not cached.is_file():
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f".{cached.name}.{threading.get_ident()}")
        with stored.open("rb") as source, open(partial, "wb") as target:
            shutil.copyfileobj(source, target, 1024 * 1024)
        partial.replace(cached)
    return cached


@functools.cache
def _limit_threads() -> None:
    if settings.ML_TORCH_THREADS > 0:
        import torch

        torch.set_num_threads(settings.ML_TORCH_THREADS)
