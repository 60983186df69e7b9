"""Jobs in and out: create a job from validated uploads, queue its fields, retry a field, delete a job.

Creating a job reads every channel with `ml.io` first, so a bad upload is refused with a sentence
and nothing is stored; the fields are queued once the job is committed.
"""

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.files.base import File
from django.db import transaction
from rest_framework.authtoken.models import Token

from cells import ml_config
from cells.models import Field, Job
from cells.tasks import process_field
from cells.uploads import FieldUpload, JobInputError
from ml.io import InputError, read_channel, read_field, read_multichannel_tiff
from ml.segmentation import BACKENDS


def job_create(
    *,
    owner: AbstractBaseUser,
    uploads: Sequence[FieldUpload],
    name: str = "",
    segmentation_backend: str | None = None,
) -> Job:
    """Validate every field, store the job and its files, and queue each field once committed.

    Nothing is stored unless every field is valid; files written before a failure are removed.
    """
    backend = segmentation_backend or ml_config.default_segmentation_backend()
    if backend not in BACKENDS:
        raise JobInputError(
            {"segmentation": f"Unknown segmentation backend {backend!r}; choose one of {', '.join(BACKENDS)}."}
        )
    checked = _validate_uploads(uploads)

    stored_files = []
    try:
        with transaction.atomic():
            job = Job.objects.create(owner=owner, name=name.strip(), segmentation_backend=backend)
            for upload, image in zip(uploads, checked, strict=True):
                field = Field(
                    job=job, name=upload.name, width=image.width, height=image.height, bit_depth=image.bit_depth
                )
                files = dict(upload.channel_files)
                if upload.multichannel_file is not None:
                    files["multichannel"] = upload.multichannel_file
                for slot, upload_file in files.items():
                    with _reading(upload_file):
                        getattr(field, slot).save(_stored_name(upload.name, slot, upload_file), upload_file, save=False)
                    stored_files.append(getattr(field, slot))
                field.save()
            field_ids = list(job.fields.values_list("id", flat=True))
            transaction.on_commit(lambda: fields_enqueue(field_ids=field_ids))
    except Exception:
        for stored in stored_files:
            stored.storage.delete(stored.name)
        raise
    return job


def fields_enqueue(*, field_ids: Sequence[int]) -> None:
    """Send each field to the worker now; callers inside a transaction do it on commit."""
    for field_id in field_ids:
        process_field.delay(field_id)


def field_retry(*, field: Field) -> Field:
    """Put a failed field back in the queue; its inputs were kept."""
    if field.status != Field.Status.FAILED:
        raise ValidationError("Only a failed field can be run again.")
    Field.objects.filter(pk=field.pk).update(status=Field.Status.QUEUED, progress=0.0, error="")
    transaction.on_commit(lambda: fields_enqueue(field_ids=[field.pk]))
    field.refresh_from_db()
    return field


@transaction.atomic
def job_delete(*, job: Job) -> None:
    """Delete a job with its fields, cells and every stored file."""
    stored = []
    for field in job.fields.prefetch_related("images", "cells"):
        stored += field.stored_files()
        stored += [image.file for image in field.images.all()]
        stored += [cell.thumbnail for cell in field.cells.all() if cell.thumbnail]
    job.delete()
    names = [(stored_file.storage, stored_file.name) for stored_file in stored]
    # Files go only once the rows are gone for good.
    transaction.on_commit(lambda: _delete_files(names))


@transaction.atomic
def api_token_regenerate(*, user: AbstractBaseUser) -> Token:
    """A new API token for the user; the previous one stops working."""
    Token.objects.filter(user=user).delete()
    return Token.objects.create(user=user)


@dataclass(frozen=True)
class _CheckedField:
    """What storing needs from a validated field; the pixels themselves are not kept."""

    height: int
    width: int
    bit_depth: int


def _validate_uploads(uploads: Sequence[FieldUpload]) -> list[_CheckedField]:
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
            checked.append(_check_upload(upload))
        except InputError as exc:
            errors[upload.name] = str(exc)
    if errors:
        raise JobInputError(errors)
    return checked


def _check_upload(upload: FieldUpload) -> _CheckedField:
    """Decode the field to validate it; on failure name every unreadable file, not only the first."""
    max_side_px = ml_config.max_side_px()
    with contextlib.ExitStack() as stack:
        if upload.multichannel_file is not None:
            images = read_multichannel_tiff(
                stack.enter_context(_reading(upload.multichannel_file)), max_side_px=max_side_px
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


def _delete_files(names: Sequence[tuple]) -> None:
    for storage, name in names:
        storage.delete(name)
