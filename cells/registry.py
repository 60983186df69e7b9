"""The model registry: which classifiers and segmenters the installation and its users can run.

The shipped classifier and the one `ML_MODEL_PATH` names are registered the first time the
registry is asked (`models_register_installed`), so a fresh database needs no setup step; users
and administrators import hpaweb checkpoints and bioimage.io packages (`model_import`), and
nucleus + cell bioimage.io segmentation package pairs (`segmenter_import`), which a job chooses
as its segmentation backend "model:<id>". A row holds what the model file says of itself (name,
version, classes, input, normalisation, metrics, training data, card) so pages never load
weights to describe it.
"""

import functools
import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files import File
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet

from cells import ml_config
from cells.files import stored_files_delete
from cells.models import RegisteredModel, segmenter_model_id
from ml.classifier.base import ModelDescription
from ml.classifier.loading import load_classifier
from ml.constants import CLASS_NAMES, DEFAULT_MODEL_PATH

logger = logging.getLogger(__name__)

_HASH_CHUNK_BYTES = 1024 * 1024


class ModelImportError(ValidationError):
    """A model file cannot be registered; the message says why and what to do."""


def file_sha256(path: Path) -> str:
    stat = path.stat()
    return _file_sha256(path.resolve(), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _file_sha256(path: Path, size: int, mtime_ns: int) -> str:
    """The hash of a file as it is now (size and modification time key the cache)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def describe_model_file(path: Path, *, class_mapping: Mapping[int, str] | None = None) -> ModelDescription:
    """What a classifier file says of itself; raises `ModelImportError` with the loader's sentence."""
    try:
        options = {"class_mapping": dict(class_mapping)} if class_mapping else {}
        return load_classifier(path, device="cpu", **options).description
    except (ValueError, OSError) as error:  # CheckpointError and the package errors are ValueErrors
        raise ModelImportError(str(error)) from None


def describe_segmentation_file(path: Path, *, kind: str) -> ModelDescription:
    """What a `kind` ("nuclei" or "cell") segmentation package says of itself, checked as the
    bioimageio backend runs it; raises `ModelImportError` with the library's sentence."""
    from ml.bioimageio import check_segmentation_package, open_package

    try:
        with open_package(path) as package:
            return check_segmentation_package(package, kind=kind, device="cpu")
    except (ValueError, OSError) as error:
        message = str(error)
        if not message.startswith(f"The {kind} package"):
            message = f"The {kind} package was refused: {message}"
        raise ModelImportError(message) from None


def parse_class_mapping(text: str) -> dict[int, str] | None:
    """A user's JSON mapping of output index to HPA class name; None when empty."""
    if not text.strip():
        return None
    try:
        mapping = {int(index): str(name) for index, name in json.loads(text).items()}
    except (ValueError, AttributeError, TypeError):
        raise ModelImportError(
            'The class mapping must be a JSON object from output index to class name, e.g. {"0": "Nucleoplasm"}.'
        ) from None
    unknown = sorted(set(mapping.values()) - set(CLASS_NAMES))
    if unknown:
        raise ModelImportError(f"The class mapping names {unknown[0]!r}, which is not one of the 19 HPA classes.")
    return mapping


def _row_fields(description: ModelDescription) -> dict:
    return {
        "name": description.name,
        "version": description.version,
        "format": description.format,
        "architecture": description.architecture,
        "class_names": list(description.class_names),
        "input_size_px": description.input_size_px,
        "normalisation": {"mean": list(description.mean), "std": list(description.std)},
        "metrics": description.metrics,
        "training_data": description.data,
        "summary": description.summary[:500],
        "card": description.card,
    }


def models_register_installed() -> list[RegisteredModel]:
    """Register the shipped classifier and the one ML_MODEL_PATH names (once each, by file hash).

    The configured model becomes the default when the installation has none yet.
    """
    configured = ml_config.classifier_path()
    paths = [DEFAULT_MODEL_PATH] if DEFAULT_MODEL_PATH.is_file() else []
    if configured is not None and configured.resolve() not in {path.resolve() for path in paths}:
        paths.append(configured)
    registered = []
    for path in paths:
        sha256 = file_sha256(path)
        model = RegisteredModel.objects.filter(kind=RegisteredModel.Kind.CLASSIFIER, sha256=sha256, owner=None).first()
        if model is None:
            try:
                description = describe_model_file(path)
            except ModelImportError as error:
                logger.warning("The classifier at %s is not registered: %s", path, error)
                continue
            model = RegisteredModel.objects.create(
                kind=RegisteredModel.Kind.CLASSIFIER,
                source_path=str(path.resolve()),
                sha256=sha256,
                visibility=RegisteredModel.Visibility.SHARED,
                **_row_fields(description),
            )
        registered.append(model)
    if configured is not None and registered and not _default_exists():
        wanted = next((m for m in registered if Path(m.source_path) == configured.resolve()), registered[-1])
        _make_default(wanted)
    return registered


def _default_exists() -> bool:
    return RegisteredModel.objects.filter(kind=RegisteredModel.Kind.CLASSIFIER, is_default=True).exists()


def classifier_default() -> RegisteredModel | None:
    """The installation's default classifier; None when no classifier is installed at all."""
    if not _default_exists():
        models_register_installed()
    return RegisteredModel.objects.filter(kind=RegisteredModel.Kind.CLASSIFIER, is_default=True).first()


def models_visible_to(user: AbstractBaseUser) -> QuerySet[RegisteredModel]:
    """The models a user may see and choose: shared ones and their own."""
    models_register_installed()
    return RegisteredModel.objects.filter(Q(visibility=RegisteredModel.Visibility.SHARED) | Q(owner=user))


def classifiers_for(user: AbstractBaseUser) -> QuerySet[RegisteredModel]:
    return models_visible_to(user).filter(kind=RegisteredModel.Kind.CLASSIFIER)


def classifier_for_job(*, user: AbstractBaseUser, model_id: int | None) -> RegisteredModel | None:
    """The classifier a new job of `user` runs with: the chosen one, else the default."""
    if model_id is None:
        return classifier_default()
    model = classifiers_for(user).filter(pk=model_id).first()
    if model is None:
        raise ValidationError(
            f"There is no classifier with id {model_id} that you can use; choose one from /api/models/."
        )
    return model


def segmenters_for(user: AbstractBaseUser) -> QuerySet[RegisteredModel]:
    """The registered segmentation package pairs a user may choose."""
    return models_visible_to(user).filter(kind=RegisteredModel.Kind.SEGMENTER)


def segmenter_for_job(*, user: AbstractBaseUser, backend: str) -> RegisteredModel | None:
    """The registered pair a backend name such as "model:12" chooses, checked that `user` may use it;
    None for a builtin backend's name."""
    model_id = segmenter_model_id(backend)
    if model_id is None:
        return None
    model = segmenters_for(user).filter(pk=model_id).first()
    if model is None:
        raise ValidationError(
            f"There is no segmentation model with id {model_id} that you can use; choose one from /api/models/."
        )
    return model


def segmentation_choices(user: AbstractBaseUser) -> list[tuple[str, str]]:
    """(backend name, label) of every segmentation a new job of `user` may choose: the builtin
    backends that can run here (and the configured default), then the pairs they may use."""
    default = ml_config.default_segmentation_backend()
    builtin = [
        (backend, backend)
        for backend, available in ml_config.segmentation_backends().items()
        if available or backend == default
    ]
    return builtin + [(model.segmentation_backend, model.label) for model in segmenters_for(user)]


def _make_default(model: RegisteredModel) -> None:
    RegisteredModel.objects.filter(kind=model.kind, is_default=True).exclude(pk=model.pk).update(is_default=False)
    RegisteredModel.objects.filter(pk=model.pk).update(is_default=True)
    model.is_default = True


@transaction.atomic
def model_set_default(*, model: RegisteredModel, user: AbstractBaseUser) -> RegisteredModel:
    """Make `model` the installation's default of its kind; administrators only, shared models only."""
    if not user.is_staff:
        raise PermissionDenied("Only an administrator sets the installation's default model.")
    if model.kind != RegisteredModel.Kind.CLASSIFIER:
        raise ValidationError("Only a classifier can be the installation's default; a job chooses its segmentation.")
    if model.visibility != RegisteredModel.Visibility.SHARED:
        raise ValidationError("Only a shared model can be the installation's default; share it first.")
    _make_default(model)
    return model


def model_import(
    *,
    owner: AbstractBaseUser,
    upload: File,
    visibility: str = RegisteredModel.Visibility.PRIVATE,
    class_mapping: Mapping[int, str] | None = None,
) -> RegisteredModel:
    """Check a classifier file (hpaweb checkpoint or bioimage.io package), store it and register it.

    Shared models are added by administrators only; private ones where the installation allows
    them. Nothing is stored when the file is refused.
    """
    _check_may_import(owner=owner, visibility=visibility)
    _check_size(upload, what="model file")
    suffix = Path(upload.name or "model").suffix.lower()
    if suffix not in (".pt", ".zip", ".skops"):
        raise ModelImportError(
            "A model is an hpaweb checkpoint (.pt), a classical classifier (.skops, from `python -m ml "
            "train-classical`) or a bioimage.io package (.zip)."
        )
    with tempfile.TemporaryDirectory(prefix="hpaweb-model-") as folder:
        local = _local_copy(upload, Path(folder) / f"model{suffix}")
        description = describe_model_file(local, class_mapping=class_mapping)
        sha256 = file_sha256(local)
        stored_owner = None if visibility == RegisteredModel.Visibility.SHARED else owner
        if RegisteredModel.objects.filter(
            kind=RegisteredModel.Kind.CLASSIFIER, sha256=sha256, owner=stored_owner
        ).exists():
            raise ModelImportError("This model file is registered already.")
        model = RegisteredModel(
            kind=RegisteredModel.Kind.CLASSIFIER,
            sha256=sha256,
            owner=stored_owner,
            visibility=visibility,
            class_mapping={str(index): name for index, name in (class_mapping or {}).items()},
            **_row_fields(description),
        )
        try:
            with transaction.atomic(), open(local, "rb") as handle:
                model.file.save(f"{_safe_stem(description.name)}{suffix}", File(handle), save=False)
                model.save()
        except IntegrityError:
            _stored_files_delete(model)
            raise ModelImportError("This model file is registered already.") from None
        except Exception:
            _stored_files_delete(model)
            raise
    return model


def _check_may_import(*, owner: AbstractBaseUser, visibility: str) -> None:
    if visibility not in RegisteredModel.Visibility.values:
        raise ModelImportError(f"Visibility must be one of {', '.join(RegisteredModel.Visibility.values)}.")
    if visibility == RegisteredModel.Visibility.SHARED and not owner.is_staff:
        raise PermissionDenied("Only an administrator adds shared models; import it as private instead.")
    if visibility == RegisteredModel.Visibility.PRIVATE and not (owner.is_staff or ml_config.private_models_allowed()):
        raise PermissionDenied("This installation does not accept private models; ask an administrator to add it.")


def _check_size(upload: File, *, what: str) -> None:
    limit = ml_config.max_model_bytes()
    if upload.size is not None and upload.size > limit:
        raise ModelImportError(
            f"The {what} is {upload.size / 1e6:.0f} MB; this installation accepts at most {limit / 1e6:.0f} MB."
        )


def _local_copy(upload: File, local: Path) -> Path:
    with open(local, "wb") as handle:
        upload.seek(0)
        shutil.copyfileobj(upload, handle, _HASH_CHUNK_BYTES)
    return local


def segmenter_import(
    *,
    owner: AbstractBaseUser,
    nuclei_upload: File,
    cell_upload: File,
    visibility: str = RegisteredModel.Visibility.PRIVATE,
    name: str = "",
) -> RegisteredModel:
    """Check a nucleus and a cell bioimage.io segmentation package, store both and register the pair
    as one segmenter, which jobs choose as their segmentation backend ("model:<id>").

    Each package is checked as the bioimageio backend runs it (a classifier is refused); who may
    add shared and private pairs is as for classifiers. Nothing is stored when either is refused.
    """
    _check_may_import(owner=owner, visibility=visibility)
    uploads = {"nuclei": nuclei_upload, "cell": cell_upload}
    for kind, upload in uploads.items():
        _check_size(upload, what=f"{kind} package")
        if Path(upload.name or "package").suffix.lower() != ".zip":
            raise ModelImportError(f"The {kind} package must be a bioimage.io model package (.zip).")
    with tempfile.TemporaryDirectory(prefix="hpaweb-segmenter-") as folder:
        local = {kind: _local_copy(upload, Path(folder) / f"{kind}.zip") for kind, upload in uploads.items()}
        described = {kind: describe_segmentation_file(path, kind=kind) for kind, path in local.items()}
        sha256 = {kind: file_sha256(path) for kind, path in local.items()}
        stored_owner = None if visibility == RegisteredModel.Visibility.SHARED else owner
        registered = RegisteredModel.objects.filter(
            kind=RegisteredModel.Kind.SEGMENTER, sha256=sha256["nuclei"], cell_sha256=sha256["cell"], owner=stored_owner
        )
        if registered.exists():
            raise ModelImportError("This pair of segmentation packages is registered already.")
        nuclei, cell = described["nuclei"], described["cell"]
        model = RegisteredModel(
            kind=RegisteredModel.Kind.SEGMENTER,
            name=(name.strip() or f"{nuclei.name} + {cell.name}")[:200],
            version=(nuclei.version if nuclei.version == cell.version else f"{nuclei.version}+{cell.version}")[:50],
            format=nuclei.format,
            architecture=f"nuclei: {nuclei.architecture}; cell: {cell.architecture}"[:200],
            input_size_px=nuclei.input_size_px,
            training_data={"nuclei": nuclei.data, "cell": cell.data},
            summary=f"Nuclei: {nuclei.summary} Cells: {cell.summary}"[:500],
            card=f"# Nucleus package: {nuclei.name}\n\n{nuclei.card}\n\n# Cell package: {cell.name}\n\n{cell.card}",
            sha256=sha256["nuclei"],
            cell_sha256=sha256["cell"],
            owner=stored_owner,
            visibility=visibility,
        )
        try:
            with (
                transaction.atomic(),
                open(local["nuclei"], "rb") as nuclei_file,
                open(local["cell"], "rb") as cell_file,
            ):
                model.file.save(f"{_safe_stem(nuclei.name)}.zip", File(nuclei_file), save=False)
                model.cell_file.save(f"{_safe_stem(cell.name)}.zip", File(cell_file), save=False)
                model.save()
        except IntegrityError:
            _stored_files_delete(model)
            raise ModelImportError("This pair of segmentation packages is registered already.") from None
        except Exception:
            _stored_files_delete(model)
            raise
    return model


def _stored_files_delete(model: RegisteredModel) -> None:
    for stored in model.stored_files():
        stored.delete(save=False)


@transaction.atomic
def model_delete(*, model: RegisteredModel, user: AbstractBaseUser) -> None:
    """Remove an imported model and its file; results it made keep its name and version."""
    if model.source_path:
        raise ValidationError("A model the installation provides cannot be deleted here; change ML_MODEL_PATH.")
    if not (user.is_staff or model.owner_id == user.pk):
        raise PermissionDenied("Only its owner or an administrator deletes a model.")
    model.refresh_from_db(fields=["is_default"])
    if model.is_default:
        raise ValidationError("The default model cannot be deleted; make another model the default first.")
    stored = [(stored.storage, stored.name) for stored in model.stored_files()]
    model.delete()
    transaction.on_commit(lambda: stored_files_delete(stored))


def _safe_stem(name: str) -> str:
    stem = "".join(char if char.isalnum() or char in "-_." else "-" for char in name).strip("-.")
    return stem[:80] or "model"


def model_register_trained(
    *, owner: AbstractBaseUser, path: Path, name: str, version: str, summary: str, card: str, training_data: dict
) -> RegisteredModel:
    """Register a classifier a training job of `owner` made: private to them (an administrator may share it),
    described by the checkpoint itself plus the card and summary the training job wrote."""
    description = describe_model_file(path)
    fields = {**_row_fields(description), "name": name[:200], "version": version[:50], "summary": summary[:500]}
    fields["card"] = card
    fields["training_data"] = {**(description.data or {}), **training_data}
    model = RegisteredModel(
        kind=RegisteredModel.Kind.CLASSIFIER,
        sha256=file_sha256(path),
        owner=owner,
        visibility=RegisteredModel.Visibility.PRIVATE,
        **fields,
    )
    try:
        with transaction.atomic(), open(path, "rb") as handle:
            model.file.save(f"{_safe_stem(name)}.pt", File(handle), save=False)
            model.save()
    except Exception:
        _stored_files_delete(model)
        raise
    return model
