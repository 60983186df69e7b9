"""A field through `ml` and into rows: read its stored channels, analyse them, store cells and pictures.

Everything here is safe to run again on the same field: a re-run replaces what the previous run
stored. Progress is written with plain UPDATEs outside any transaction, so pages see it while the
worker goes on.
"""

import numpy as np
from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone

from cells import ml_config
from cells.models import Cell, Field, FieldImage
from cells.pictures import EncodedPictures, encode_pictures
from ml.io import FieldImages, InputError, read_field, read_multichannel_tiff
from ml.pipeline import STAGE_START, FieldResult, analyse_field
from ml.viewer import ViewerImages, viewer_images


def field_set_progress(*, field_id: int, status: str, progress: float) -> None:
    """Write the field's stage and share of work done (0 to 1) at once, for the pages polling it."""
    Field.objects.filter(pk=field_id).update(status=status, progress=progress)


def field_fail(*, field_id: int, reason: str) -> None:
    """Mark the field failed with a reason the user reads; its inputs are kept for a retry."""
    Field.objects.filter(pk=field_id).update(status=Field.Status.FAILED, error=reason, finished_at=timezone.now())


def field_process(*, field_id: int) -> None:
    """Segment and classify one field and store its cells; safe to run again on the same field.

    An unreadable stored channel fails the field with the reason; any other error is the caller's
    (the task's) to handle.
    """
    field = Field.objects.select_related("job").get(pk=field_id)
    if field.status == Field.Status.DONE:
        return
    Field.objects.filter(pk=field_id).update(
        status=Field.Status.SEGMENTING,
        progress=STAGE_START["segmenting"],
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
        # Each stage's start, also for the pipeline's closing 1.0: the field is not done until it is stored.
        status = Field.Status.CLASSIFYING if stage == "classifying" else Field.Status.SEGMENTING
        field_set_progress(field_id=field_id, status=status, progress=STAGE_START[stage])

    result = analyse_field(
        images,
        segmenter=ml_config.get_segmenter(field.job.segmentation_backend),
        predictor=ml_config.get_predictor(),
        progress=report,
    )
    field_set_progress(field_id=field_id, status=Field.Status.CLASSIFYING, progress=STAGE_START["saving"])
    viewer = viewer_images(images, result.segmentation)
    del images  # the full-resolution channels are not needed any more
    field_store_result(field=field, result=result, viewer=viewer)


def field_store_result(*, field: Field, result: FieldResult, viewer: ViewerImages) -> None:
    """Encode the field's pictures (no lock held), then replace its stored results in one transaction
    and mark it done."""
    _field_store_encoded(
        field_id=field.pk,
        result=result,
        viewer_shape=viewer.shape,
        pictures=encode_pictures(result=result, viewer=viewer),
    )


def _read_stored_field(field: Field) -> FieldImages:
    max_side_px = ml_config.max_side_px()
    if field.multichannel:
        with field.multichannel.open("rb") as handle:
            return read_multichannel_tiff(handle, max_side_px=max_side_px)
    handles = {channel: stored.open("rb") for channel, stored in field.channel_files().items()}
    try:
        return read_field(handles, max_side_px=max_side_px)
    finally:
        for handle in handles.values():
            handle.close()


@transaction.atomic
def _field_store_encoded(
    *, field_id: int, result: FieldResult, viewer_shape: tuple[int, int], pictures: EncodedPictures
) -> None:
    field = Field.objects.select_for_update().get(pk=field_id)
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
    for kind, picture in pictures.viewer.items():
        image = FieldImage(field=field, kind=kind, width=viewer_shape[1], height=viewer_shape[0])
        image.file.save(picture.file_name, ContentFile(picture.data), save=False)
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
