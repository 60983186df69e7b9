"""Jobs in and out: create a job from validated uploads, queue its fields, retry a field, delete a job.

Creating a job reads every channel with `ml.io` first, so a bad upload is refused with a sentence
and nothing is stored; the fields are queued once the job is committed.
"""

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.files.base import File
from django.db import transaction
from django.utils import timezone
from knox.models import AuthToken
from kombu.exceptions import KombuError

from cells import ml_config, registry, sweeper
from cells.files import field_file_save, stored_files_delete
from cells.image_labels import check_labels_match_fields as image_labels_check
from cells.models import Field, Job, RegisteredModel
from cells.tasks import classify_field, process_field
from cells.uploads import FieldUpload, JobInputError
from ml.io import InputError, nucleus_diameter_from, read_channel, read_field, read_multichannel_tiff
from ml.segmentation import BACKENDS

logger = logging.getLogger(__name__)
# What sending to an unreachable broker raises (kombu wraps most of it; a refused socket may come bare).
_BROKER_ERRORS = (KombuError, OSError)


def job_create(
    *,
    owner: AbstractBaseUser,
    uploads: Sequence[FieldUpload],
    name: str = "",
    segmentation_backend: str | None = None,
    classifier_id: int | None = None,
    classify: bool = True,
    image_labels: Mapping[str, Sequence[int]] | None = None,
    pixel_size_um: float | None = None,
    nucleus_diameter_px: float | None = None,
    channel_mapping: Mapping[str, str] | None = None,
) -> Job:
    """Validate every field, store the job and its files, and queue each field once committed.

    The job is segmented by `segmentation_backend`: a builtin backend, or a registered segmentation
    package pair "model:<id>" the owner may use (else the installation's default backend). It runs
    with the classifier `classifier_id` names (one the owner may use), else the installation's
    default; without either, or with `classify=False`, its fields are segmented but not classified.

    `pixel_size_um` or `nucleus_diameter_px` sets the scale segmentation works at (else it is estimated);
    `channel_mapping` maps OME-TIFF channel names onto red, green, blue and yellow (`ml.io.map_ome_channels`).
    `image_labels` maps field names to their known classes (`cells.image_labels`); labels naming a
    field the upload does not hold are refused. Nothing is stored unless every field is valid;
    files written before a failure are removed.
    """
    backend = segmentation_backend or ml_config.default_segmentation_backend()
    try:
        segmenter = registry.segmenter_for_job(user=owner, backend=backend)
    except ValidationError as error:
        raise JobInputError({"segmentation": error.messages[0]}) from None
    if segmenter is None and backend not in BACKENDS:
        raise JobInputError(
            {"segmentation": f"Unknown segmentation backend {backend!r}; choose one of {', '.join(BACKENDS)}."}
        )
    try:
        classifier = registry.classifier_for_job(user=owner, model_id=classifier_id) if classify else None
    except ValidationError as error:
        raise JobInputError({"classifier": error.messages[0]}) from None
    try:
        nucleus_diameter_from(pixel_size_um=pixel_size_um, nucleus_diameter_px=nucleus_diameter_px)
    except InputError as error:
        raise JobInputError({"scale": str(error)}) from None
    mapping = dict(channel_mapping or {})
    checked = _validate_uploads(uploads, channel_mapping=mapping)
    labels = dict(image_labels or {})
    image_labels_check(labels, [upload.name for upload in uploads])

    stored_files = []
    try:
        with transaction.atomic():
            job = Job.objects.create(
                owner=owner,
                name=name.strip(),
                segmentation_backend=backend,
                classifier=classifier,
                pixel_size_um=pixel_size_um,
                nucleus_diameter_px=nucleus_diameter_px,
                channel_mapping=mapping,
            )
            for upload, image in zip(uploads, checked, strict=True):
                field = Field(
                    job=job, name=upload.name, width=image.width, height=image.height, bit_depth=image.bit_depth
                )
                if upload.name in labels:
                    field.image_labels = sorted(int(index) for index in labels[upload.name])
                files = dict(upload.channel_files)
                if upload.multichannel_file is not None:
                    files["multichannel"] = upload.multichannel_file
                for slot, upload_file in files.items():
                    with _reading(upload_file):
                        field_file_save(getattr(field, slot), _stored_name(upload.name, slot, upload_file), upload_file)
                    stored_files.append(getattr(field, slot))
                field.save()
            field_ids = list(job.fields.values_list("id", flat=True))
    except Exception:
        stored_files_delete([(stored.storage, stored.name) for stored in stored_files])
        raise
    transaction.on_commit(lambda: _enqueue_new_job(job_id=job.pk, field_ids=field_ids))
    return job


class QueueUnavailable(Exception):
    """The broker cannot be reached: nothing was queued, and what the caller asked for was undone."""

    retry_after_s = 30


def fields_enqueue(*, field_ids: Sequence[int]) -> None:
    """Send each field to the worker now; callers inside a transaction do it on commit."""
    for field_id in field_ids:
        process_field.delay(field_id)


def _enqueue_new_job(*, job_id: int, field_ids: Sequence[int]) -> None:
    """Queue a committed job's fields; if the broker is down, delete the job again (rows and files)
    so no job waits for tasks that were never sent."""
    try:
        fields_enqueue(field_ids=field_ids)
    except _BROKER_ERRORS as error:
        logger.warning("Job %s could not be queued, so it was deleted again: %s", job_id, error)
        job = Job.objects.filter(pk=job_id).first()
        if job is not None:
            job_delete(job=job)
        raise QueueUnavailable(
            "The processing queue cannot be reached right now, so the upload was not stored; "
            "send it again in a minute, or tell the administrator if this goes on."
        ) from error


def field_retry(*, field: Field) -> Field:
    """Put a failed field back in the queue; its inputs were kept. A field still marked running
    whose worker is gone (`cells.sweeper`) may be run again too."""
    if field.status != Field.Status.FAILED and not sweeper.field_is_abandoned(field=field):
        raise ValidationError("Only a failed field can be run again.")
    Field.objects.filter(pk=field.pk).update(status=Field.Status.QUEUED, progress=0.0, error="")
    transaction.on_commit(lambda: _enqueue_retry(field_id=field.pk))
    field.refresh_from_db()
    return field


def _enqueue_retry(*, field_id: int) -> None:
    try:
        fields_enqueue(field_ids=[field_id])
    except _BROKER_ERRORS as error:
        reason = (
            "It could not be run again: the processing queue cannot be reached right now. "
            "Run it again in a minute, or tell the administrator if this goes on."
        )
        Field.objects.filter(pk=field_id).update(status=Field.Status.FAILED, error=reason, finished_at=timezone.now())
        raise QueueUnavailable(reason) from error


@transaction.atomic
def fields_classify(*, fields: Sequence[Field], classifier: RegisteredModel, user: AbstractBaseUser) -> list[Field]:
    """Queue finished fields to run with another classifier; their current results stay until it is done."""
    if not registry.classifiers_for(user).filter(pk=classifier.pk).exists():
        raise ValidationError("You cannot use that model; choose one from the Models page.")
    unfinished = [field.name for field in fields if field.status != Field.Status.DONE]
    if unfinished:
        raise ValidationError(f"Only finished fields can be run with another model; {unfinished[0]} is not done.")
    ids = [field.pk for field in fields]
    Field.objects.filter(pk__in=ids).update(status=Field.Status.QUEUED, progress=0.0, error="")
    transaction.on_commit(lambda: _enqueue_classification(field_ids=ids, classifier_id=classifier.pk))
    return list(Field.objects.filter(pk__in=ids))


@transaction.atomic
def job_classify(*, job: Job, classifier: RegisteredModel, user: AbstractBaseUser) -> Job:
    """Run every field of a finished job with another classifier, which becomes the job's."""
    fields_classify(fields=list(job.fields.all()), classifier=classifier, user=user)
    Job.objects.filter(pk=job.pk).update(classifier=classifier)
    job.refresh_from_db()
    return job


def _enqueue_classification(*, field_ids: Sequence[int], classifier_id: int) -> None:
    for field_id in field_ids:
        classify_field.delay(field_id, classifier_id)


@transaction.atomic
def job_delete(*, job: Job) -> None:
    """Delete a job with its fields, cells and every stored file, also while its fields are processed.

    The fields' rows are locked first, as a worker storing a field's results locks its row
    (`processing._field_store_encoded`): results stored before are deleted here with the rest,
    a store after finds its field gone and writes nothing; its queued tasks do nothing.
    """
    list(Field.objects.select_for_update().filter(job_id=job.pk).order_by("pk").values_list("pk", flat=True))
    stored = []
    for field in job.fields.prefetch_related("images", "cells"):
        stored += field.stored_files()
        stored += [image.file for image in field.images.all()]
        stored += [cell.thumbnail for cell in field.cells.all() if cell.thumbnail]
    job.delete()
    names = [(stored_file.storage, stored_file.name) for stored_file in stored]
    # Files go only once the rows are gone for good.
    transaction.on_commit(lambda: stored_files_delete(names))


@transaction.atomic
def api_token_regenerate(*, user: AbstractBaseUser, revoke_previous: bool = True) -> tuple[AuthToken, str]:
    """A new API token for the user: (its stored row, its key). Only a hash of the key is kept, so
    the key can be shown once. With `revoke_previous` the user's other tokens stop working."""
    if revoke_previous:
        AuthToken.objects.filter(user=user).delete()
    return AuthToken.objects.create(user=user)


@dataclass(frozen=True)
class _CheckedField:
    """What storing needs from a validated field; the pixels themselves are not kept."""

    height: int
    width: int
    bit_depth: int


def _validate_uploads(uploads: Sequence[FieldUpload], *, channel_mapping: Mapping[str, str]) -> list[_CheckedField]:
    if not uploads:
        raise JobInputError({"upload": "No field was uploaded; add the channel files of at least one field."})
    if len(uploads) > settings.HPAWEB_MAX_FIELDS_PER_JOB:
        raise JobInputError(
            {"upload": f"A job holds at most {settings.HPAWEB_MAX_FIELDS_PER_JOB} fields; split the batch."}
        )
    errors: dict[str, str] = {}
    checked: list[_CheckedField] = []
    names = [upload.name for upload in uploads]
    for upload in uploads:
        if names.count(upload.name) > 1:
            errors[upload.name] = "Two fields share this name; every field of a job needs its own ID."
            continue
        try:
            checked.append(_check_upload(upload, channel_mapping=channel_mapping))
        except InputError as exc:
            errors[upload.name] = str(exc)
    if errors:
        raise JobInputError(errors)
    return checked


def _check_upload(upload: FieldUpload, *, channel_mapping: Mapping[str, str]) -> _CheckedField:
    """Decode the field to validate it; on failure name every unreadable file, not only the first."""
    max_side_px = ml_config.max_side_px()
    with contextlib.ExitStack() as stack:
        if upload.multichannel_file is not None:
            images = read_multichannel_tiff(
                stack.enter_context(_reading(upload.multichannel_file)),
                max_side_px=max_side_px,
                channel_mapping=channel_mapping or None,
            )
        else:
            opened = {channel: stack.enter_context(_reading(f)) for channel, f in upload.channel_files.items()}
            try:
                images = read_field(opened, max_side_px=max_side_px)
            except InputError as first_error:
                raise InputError(_every_channel_error(opened, max_side_px=max_side_px) or str(first_error)) from None
    return _CheckedField(height=images.shape[0], width=images.shape[1], bit_depth=images.bit_depth)


def _every_channel_error(opened: Mapping[str, File], *, max_side_px: int) -> str:
    """The reasons of each channel file that cannot be read on its own, one sentence each."""
    reasons = []
    for channel, handle in opened.items():
        handle.seek(0)
        try:
            read_channel(handle, channel=channel, max_side_px=max_side_px)
        except InputError as exc:
            reasons.append(str(exc))
    return " ".join(reasons)


@contextlib.contextmanager
def _reading(upload_file: File) -> Iterator[File]:
    """The file, open at its start. Files unpacked from an archive stay closed until read, so a
    large batch never holds more than one field's files open."""
    was_closed = upload_file.closed
    if was_closed:
        upload_file.open("rb")
    else:
        upload_file.seek(0)
    try:
        yield upload_file
    finally:
        if was_closed:
            upload_file.close()
        else:
            upload_file.seek(0)


def _stored_name(field_name: str, channel: str, upload_file: File) -> str:
    suffix = "." + upload_file.name.rsplit(".", 1)[-1].lower() if "." in (upload_file.name or "") else ""
    return f"{field_name}_{channel}{suffix}"
