"""Every write to the cells app goes through these functions."""

import contextlib
import io
import logging
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field as dataclass_field

import numpy as np
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile, File
from django.db import transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token

from cells import ml_runtime
from cells.models import Cell, Field, FieldImage, Job
from ml.constants import CHANNELS
from ml.io import FieldImages
from ml.io import InputError, read_channel, read_field, read_multichannel_tiff
from ml.pipeline import FieldResult, analyse_field
from ml.segmentation import BACKENDS
from ml.viewer import ViewerImages, cell_thumbnails, viewer_images

logger = logging.getLogger(__name__)

# Share of a field's progress bar reached when each stage starts.
STAGE_PROGRESS = {"segmenting": 0.05, "encoding": 0.55, "classifying": 0.65, "saving": 0.9}


@dataclass(frozen=True)
class FieldUpload:
    """The files of one field as they arrive: channel files, or one multi-channel TIFF."""

    name: str
    channel_files: Mapping[str, File] = dataclass_field(default_factory=dict)
    multichannel_file: File | None = None


class JobInputError(ValidationError):
    """One or more uploaded fields are unusable; `field_errors` maps field name to the reason."""

    def __init__(self, field_errors: Mapping[str, str]) -> None:
        self.field_errors = dict(field_errors)
        super().__init__([f"{name}: {reason}" for name, reason in self.field_errors.items()])


@dataclass(frozen=True)
class _CheckedField:
    """What storing needs from a validated field; the pixels themselves are not kept."""

    height: int
    width: int
    bit_depth: int


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


def _check_upload(upload: FieldUpload) -> _CheckedField:
    """Decode the field to validate it; on failure name every unreadable file, not only the first."""
    with contextlib.ExitStack() as stack:
        if upload.multichannel_file is not None:
            images = read_multichannel_tiff(stack.enter_context(_reading(upload.multichannel_file)), max_side_px=settings.HPAWEB_MAX_SIDE_PX)
        else:
            opened = {channel: stack.enter_context(_reading(f)) for channel, f in upload.channel_files.items()}
            try:
                images = read_field(opened, max_side_px=settings.HPAWEB_MAX_SIDE_PX)
            except InputError as first_error:
                raise InputError(_every_channel_error(opened) or str(first_error)) from None
    return _CheckedField(height=images.shape[0], width=images.shape[1], bit_depth=images.bit_depth)


def _every_channel_error(opened: Mapping[str, File]) -> str:
    """The reasons of each channel file that cannot be read on its own, one sentence each."""
    reasons = []
    for channel, handle in opened.items():
        handle.seek(0)
        try:
            read_channel(handle, channel=channel, max_side_px=settings.HPAWEB_MAX_SIDE_PX)
        except InputError as exc:
            reasons.append(str(exc))
    return " ".join(reasons)


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


def job_create(
    *,
    owner,
    uploads: Sequence[FieldUpload],
    name: str = "",
    segmentation_backend: str | None = None,
) -> Job:
    """Validate every field, store the job and its files, and queue each field once committed.

    Nothing is stored unless every field is valid; files written before a failure are removed.
    """
    backend = segmentation_backend or settings.ML_SEGMENTATION_BACKEND
    if backend not in BACKENDS:
        raise JobInputError({"segmentation": f"Unknown segmentation backend {backend!r}; choose one of {', '.join(BACKENDS)}."})
    checked = _validate_uploads(uploads)

    stored_files = []
    try:
        with transaction.atomic():
            job = Job.objects.create(owner=owner, name=name.strip(), segmentation_backend=backend)
            for upload, image in zip(uploads, checked, strict=True):
                field = Field(job=job, name=upload.name, width=image.width, height=image.height, bit_depth=image.bit_depth)
                files = dict(upload.channel_files)
                if upload.multichannel_file is not None:
                    files["multichannel"] = upload.multichannel_file
                for slot, upload_file in files.items():
                    with _reading(upload_file):
                        getattr(field, slot).save(_stored_name(upload.name, slot, upload_file), upload_file, save=False)
                    stored_files.append(getattr(field, slot))
                field.save()
            field_ids = list(job.fields.values_list("id", flat=True))
            transaction.on_commit(lambda: _enqueue_fields(field_ids))
    except Exception:
        for stored in stored_files:
            stored.storage.delete(stored.name)
        raise
    return job


def _stored_name(field_name: str, channel: str, upload_file: File) -> str:
    suffix = "." + upload_file.name.rsplit(".", 1)[-1].lower() if "." in (upload_file.name or "") else ""
    return f"{field_name}_{channel}{suffix}"


def _enqueue_fields(field_ids: Sequence[int]) -> None:
    from cells.tasks import process_field

    for field_id in field_ids:
        process_field.delay(field_id)


def field_retry(*, field: Field) -> Field:
    """Put a failed field back in the queue; its inputs were kept."""
    if field.status != Field.Status.FAILED:
        raise ValidationError("Only a failed field can be run again.")
    Field.objects.filter(pk=field.pk).update(status=Field.Status.QUEUED, progress=0.0, error="")
    transaction.on_commit(lambda: _enqueue_fields([field.pk]))
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


def _delete_files(names: Sequence[tuple]) -> None:
    for storage, name in names:
        storage.delete(name)


@transaction.atomic
def api_token_regenerate(*, user) -> Token:
    """A new API token for the user; the previous one stops working."""
    Token.objects.filter(user=user).delete()
    return Token.objects.create(user=user)


def field_set_progress(*, field_id: int, status: str, progress: float) -> None:
    # A plain UPDATE outside any transaction, so pages see it while the worker goes on.
    Field.objects.filter(pk=field_id).update(status=status, progress=progress)


def field_fail(*, field_id: int, reason: str) -> None:
    Field.objects.filter(pk=field_id).update(status=Field.Status.FAILED, error=reason, finished_at=timezone.now())


def _read_stored_field(field: Field) -> FieldImages:
    if field.multichannel:
        with field.multichannel.open("rb") as handle:
            return read_multichannel_tiff(handle, max_side_px=settings.HPAWEB_MAX_SIDE_PX)
    handles = {channel: stored.open("rb") for channel, stored in field.channel_files().items()}
    try:
        return read_field(handles, max_side_px=settings.HPAWEB_MAX_SIDE_PX)
    finally:
        for handle in handles.values():
            handle.close()


def field_process(*, field_id: int) -> None:
    """Segment and classify one field and store its cells; safe to run again on the same field."""
    field = Field.objects.select_related("job").get(pk=field_id)
    if field.status == Field.Status.DONE:
        return
    Field.objects.filter(pk=field_id).update(
        status=Field.Status.SEGMENTING,
        progress=STAGE_PROGRESS["segmenting"],
        error="",
        attempts=field.attempts + 1,
        started_at=timezone.now(),
    )
    try:
        images = _read_stored_field(field)
    except InputError as exc:
        field_fail(field_id=field_id, reason=str(exc))
        return

    def report(stage: str, fraction: float) -> None:
        status = Field.Status.CLASSIFYING if stage == "classifying" else Field.Status.SEGMENTING
        field_set_progress(field_id=field_id, status=status, progress=STAGE_PROGRESS.get(stage, fraction))

    result = analyse_field(
        images,
        segmenter=ml_runtime.get_segmenter(field.job.segmentation_backend),
        predictor=ml_runtime.get_predictor(),
        progress=report,
    )
    field_set_progress(field_id=field_id, status=Field.Status.CLASSIFYING, progress=STAGE_PROGRESS["saving"])
    viewer = viewer_images(images, result.segmentation)
    del images  # the full-resolution channels are not needed any more
    _field_store_result(field=field, result=result, viewer=viewer)


# Pillow releases the GIL while it compresses, so a field's pictures are encoded side by side.
PICTURE_THREADS = 4
JPEG_QUALITY = 95


def _png_bytes(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    # Level 3: close to the default's size at a fraction of its time.
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def _jpeg_bytes(pixels: np.ndarray) -> bytes:
    """Pictures for people only (preview, thumbnails): JPEG is several times faster to write than PNG."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def _overlay_png_bytes(overlay: np.ndarray) -> bytes:
    """An RGBA outline overlay of one colour as a 2-colour palette PNG, transparent where it is not drawn.

    Browsers show it exactly as the RGBA image, from a quarter of the bytes to compress.
    """
    from PIL import Image

    drawn = overlay[..., 3] > 0
    colours = np.unique(overlay[drawn][:, :3], axis=0)
    if len(colours) > 1:
        raise ValueError("An outline overlay must have a single colour.")
    image = Image.frombytes("P", (overlay.shape[1], overlay.shape[0]), drawn.astype(np.uint8).tobytes())
    image.putpalette([0, 0, 0, *(colours[0].tolist() if len(colours) else (0, 0, 0))])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=3, transparency=0)
    return buffer.getvalue()


def _label_png_bytes(labels: np.ndarray) -> bytes:
    from ml.io import write_labels_png

    buffer = io.BytesIO()
    write_labels_png(buffer, labels)
    return buffer.getvalue()


@dataclass(frozen=True)
class _EncodedPictures:
    viewer: dict[str, bytes]  # FieldImage kind -> JPEG (channels) or PNG (outlines, cell ids)
    nuclei_labels: bytes
    cell_labels: bytes
    preview: bytes
    thumbnails: list[bytes]


def _encode_pictures(result: FieldResult, viewer: ViewerImages) -> _EncodedPictures:
    """Every file a processed field stores, encoded on `PICTURE_THREADS` threads."""
    viewer_jobs = {
        # Channels are for looking at (the data stay in the uploaded files): JPEG, as image servers
        # such as OMERO render them, is about 20 times faster to write than PNG and half the size.
        **{kind: (_jpeg_bytes, viewer.channels[kind]) for kind in CHANNELS if kind in viewer.channels},
        FieldImage.Kind.CELL_OUTLINES: (_overlay_png_bytes, viewer.cell_outlines),
        FieldImage.Kind.NUCLEUS_OUTLINES: (_overlay_png_bytes, viewer.nucleus_outlines),
        FieldImage.Kind.CELL_IDS: (_png_bytes, viewer.cell_ids),
    }
    with ThreadPoolExecutor(max_workers=PICTURE_THREADS) as pool:
        # The thumbnails are drawn while the larger pictures compress.
        thumbnails = pool.submit(
            cell_thumbnails,
            viewer,
            cell_ids=np.array([cell.cell_id for cell in result.cells], dtype=np.int64),
            bboxes=np.array([cell.bbox for cell in result.cells], dtype=np.int64).reshape(-1, 4),
        )
        viewer_futures = {kind: pool.submit(encode, pixels) for kind, (encode, pixels) in viewer_jobs.items()}
        nuclei_labels = pool.submit(_label_png_bytes, result.segmentation.nuclei_labels)
        cell_labels = pool.submit(_label_png_bytes, result.segmentation.cell_labels)
        preview = pool.submit(_jpeg_bytes, viewer.composite)
        thumbnail_bytes = list(pool.map(_jpeg_bytes, thumbnails.result()))
        return _EncodedPictures(
            viewer={kind: future.result() for kind, future in viewer_futures.items()},
            nuclei_labels=nuclei_labels.result(),
            cell_labels=cell_labels.result(),
            preview=preview.result(),
            thumbnails=thumbnail_bytes,
        )


def _field_store_result(*, field: Field, result: FieldResult, viewer: ViewerImages) -> None:
    """Encode the field's pictures (no lock held), then replace its stored results in one transaction."""
    _field_store_encoded(field=field, result=result, viewer_shape=viewer.shape, pictures=_encode_pictures(result, viewer))


@transaction.atomic
def _field_store_encoded(*, field: Field, result: FieldResult, viewer_shape: tuple[int, int], pictures: _EncodedPictures) -> None:
    field = Field.objects.select_for_update().get(pk=field.pk)
    # A re-run replaces everything the previous run stored.
    for image in field.images.all():
        image.file.delete(save=False)
    for old_cell in field.cells.exclude(thumbnail=""):
        old_cell.thumbnail.delete(save=False)
    field.images.all().delete()
    field.cells.all().delete()
    cells = []
    for cell, thumbnail in zip(result.cells, pictures.thumbnails, strict=True):
        probabilities = list(cell.probabilities) if cell.probabilities is not None else None
        top_class = int(np.argmax(probabilities)) if probabilities else None
        cells.append(
            Cell(
                field=field,
                label=cell.cell_id,
                min_row=cell.bbox[0],
                min_col=cell.bbox[1],
                max_row=cell.bbox[2],
                max_col=cell.bbox[3],
                area_px=cell.area_px,
                mask_rle=cell.mask_rle,
                nucleus_rle=cell.nucleus_rle,
                probabilities=probabilities,
                top_class=top_class,
                top_confidence=probabilities[top_class] if probabilities else None,
                model_name=result.model_name or "",
            )
        )
        cells[-1].thumbnail.save(f"{cell.cell_id}.jpg", ContentFile(thumbnail), save=False)
    Cell.objects.bulk_create(cells, batch_size=500)
    for kind, encoded in pictures.viewer.items():
        image = FieldImage(field=field, kind=kind, width=viewer_shape[1], height=viewer_shape[0])
        extension = "jpg" if kind in CHANNELS else "png"  # as `_encode_pictures` encodes them
        image.file.save(f"{kind}.{extension}", ContentFile(encoded), save=False)
        image.save()
    for stored in (field.nuclei_labels, field.cell_labels, field.preview):
        if stored:
            stored.delete(save=False)
    field.nuclei_labels.save(f"{field.name}_nuclei.png", ContentFile(pictures.nuclei_labels), save=False)
    field.cell_labels.save(f"{field.name}_cells.png", ContentFile(pictures.cell_labels), save=False)
    field.preview.save(f"{field.name}_preview.jpg", ContentFile(pictures.preview), save=False)
    field.segmentation_backend = result.segmentation.backend
    field.channels_used = list(result.segmentation.channels_used)
    field.model_name = result.model_name or ""
    field.image_probabilities = list(result.image_probabilities) if result.image_probabilities is not None else None
    field.timings_s = dict(result.timings_s)
    field.status = Field.Status.DONE
    field.progress = 1.0
    field.error = ""
    field.finished_at = timezone.now()
    field.save()
