"""A field through `ml` and into rows: read its stored channels, analyse them, store cells and pictures.

Everything here is safe to run again on the same field: a re-run replaces what the previous run
stored. Progress is written with plain UPDATEs outside any transaction, so pages see it while the
worker goes on.
"""

import dataclasses
import logging

import numpy as np
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import F
from django.db.models.fields.files import FieldFile
from django.utils import timezone

from cells import ml_config
from cells.files import field_file_save, stored_files_delete
from cells.models import Cell, CellPrediction, Field, FieldImage, FieldPrediction, RegisteredModel
from ml.crops import crop_cells, field_planes
from ml.io import (
    FieldImages,
    InputError,
    normalise_range,
    nucleus_diameter_from,
    read_field,
    read_labels_png,
    read_multichannel_tiff,
)
from ml.pictures import EncodedPictures
from ml.pipeline import STAGE_START, FieldResult, analyse_field

logger = logging.getLogger(__name__)


class FieldGone(Exception):
    """The field was deleted (with its job) while it was processed: the run stops and stores nothing."""


def field_set_progress(*, field_id: int, status: str, progress: float) -> None:
    """Write the field's stage and share of work done (0 to 1) at once, for the pages polling it."""
    if not Field.objects.filter(pk=field_id).update(status=status, progress=progress):
        raise FieldGone(field_id)


def field_fail(*, field_id: int, reason: str) -> None:
    """Mark the field failed with a reason the user reads; its inputs are kept for a retry."""
    Field.objects.filter(pk=field_id).update(status=Field.Status.FAILED, error=reason, finished_at=timezone.now())


def field_process(*, field_id: int, resume: bool = False) -> None:
    """Segment and classify one queued field and store its cells; safe to run again on the same field.

    The run first claims the field (queued -> segmenting, one more attempt); a field that is not
    queued (done, failed, gone, or claimed by another copy of the task) is left alone, so a
    message delivered twice runs the field once. `resume` also claims a running field: the
    task's own retry of the run it started. A field deleted meanwhile stops the run (`FieldGone`).
    An unreadable stored channel fails the field with the reason; any other error is the caller's
    (the task's) to handle.
    """
    claimable = [Field.Status.QUEUED, *((Field.Status.SEGMENTING, Field.Status.CLASSIFYING) if resume else ())]
    claimed = Field.objects.filter(pk=field_id, status__in=claimable).update(
        status=Field.Status.SEGMENTING,
        progress=STAGE_START["segmenting"],
        error="",
        attempts=F("attempts") + 1,
        started_at=timezone.now(),
    )
    if not claimed:
        logger.info("Field %s is not queued (done, failed, deleted or running elsewhere); nothing to do", field_id)
        return
    field = Field.objects.select_related("job").get(pk=field_id)
    try:
        images = read_stored_field(field)
    except InputError as exc:
        field_fail(field_id=field_id, reason=str(exc))
        return

    def report(stage: str, fraction: float) -> None:
        # Each stage's start, also for the pipeline's closing 1.0: the field is not done until it is stored.
        status = Field.Status.CLASSIFYING if stage == "classifying" else Field.Status.SEGMENTING
        field_set_progress(field_id=field_id, status=status, progress=STAGE_START[stage])

    classifier = field.job.classifier
    result = analyse_field(
        images,
        segmenter=ml_config.get_segmenter(field.job.segmentation_backend),
        predictor=ml_config.get_classifier(classifier) if classifier is not None else None,
        progress=report,
        measure=ml_config.measure_options(),
        viewer=True,  # the pictures the field stores, made and encoded beside the analysis
    )
    field_set_progress(field_id=field_id, status=Field.Status.CLASSIFYING, progress=STAGE_START["saving"])
    del images  # the full-resolution channels are not needed any more
    field_store_result(field=field, result=result, classifier=classifier)


def field_store_result(*, field: Field, result: FieldResult, classifier: RegisteredModel | None = None) -> None:
    """Replace the field's stored results with an analysed field's (`analyse_field(viewer=True)`, which
    encodes its pictures) in one transaction and mark it done. `classifier` is the registry row of the
    model that made the probabilities."""
    if result.pictures is None:
        raise ValueError("Analyse the field with viewer=True: its stored results include the pictures.")
    _field_store_encoded(field_id=field.pk, result=result, pictures=result.pictures, classifier=classifier)


def field_classify(*, field_id: int, classifier_id: int) -> None:
    """Run a finished field's cells through another classifier, keeping every earlier model's predictions.

    The cells and pictures stay as they are; the field's current predictions become this model's.
    """
    field = Field.objects.select_related("job").get(pk=field_id)
    classifier = RegisteredModel.objects.get(pk=classifier_id)
    # started_at dates this run, so the sweeper does not take it for one left by a dead worker.
    Field.objects.filter(pk=field_id).update(started_at=timezone.now())
    field_set_progress(field_id=field_id, status=Field.Status.CLASSIFYING, progress=STAGE_START["classifying"])
    try:
        images = read_stored_field(field)
    except InputError as exc:
        field_fail(field_id=field_id, reason=str(exc))
        return
    with field.cell_labels.open("rb") as handle:
        cell_labels = read_labels_png(handle)
    predictor = ml_config.get_classifier(classifier)
    crops = crop_cells(field_planes(normalise_range(images)), cell_labels, size_px=predictor.input_size_px)
    del images
    predictions = predictor.predict_cells(crops)
    _field_store_predictions(
        field_id=field_id,
        classifier=classifier,
        cell_ids=[int(cell_id) for cell_id in crops.cell_ids],
        final_probabilities=predictions.final_probabilities.tolist(),
        image_probabilities=predictions.image_probabilities.tolist(),
        familiarity=None if predictions.familiarity is None else predictions.familiarity.tolist(),
        unfamiliar=None if predictions.unfamiliar is None else predictions.unfamiliar.tolist(),
    )


@transaction.atomic
def _field_store_predictions(
    *,
    field_id: int,
    classifier: RegisteredModel,
    cell_ids: list[int],
    final_probabilities: list[list[float]],
    image_probabilities: list[float],
    familiarity: list[float] | None,
    unfamiliar: list[bool] | None,
) -> None:
    field = Field.objects.select_for_update().get(pk=field_id)
    cells = {cell.label: cell for cell in field.cells.all()}
    flags = unfamiliar or []
    share = sum(flags) / len(flags) if flags else None
    FieldPrediction.objects.filter(field=field, classifier=classifier).delete()
    prediction = FieldPrediction.objects.create(
        field=field,
        classifier=classifier,
        model_name=classifier.name,
        model_version=classifier.version,
        image_probabilities=image_probabilities,
        unfamiliar_share=None if unfamiliar is None else share,
    )
    rows, changed = [], []
    for index, cell_id in enumerate(cell_ids):
        cell = cells[cell_id]
        probabilities = final_probabilities[index]
        top_class = int(np.argmax(probabilities))
        cell.probabilities = probabilities
        cell.top_class = top_class
        cell.top_confidence = probabilities[top_class]
        cell.familiarity = None if familiarity is None else familiarity[index]
        cell.unfamiliar = None if unfamiliar is None else bool(unfamiliar[index])
        cell.classifier = classifier
        cell.model_name = classifier.name
        changed.append(cell)
        rows.append(_cell_prediction(prediction, cell))
    Cell.objects.bulk_update(
        changed,
        ["probabilities", "top_class", "top_confidence", "familiarity", "unfamiliar", "classifier", "model_name"],
        batch_size=500,
    )
    CellPrediction.objects.bulk_create(rows, batch_size=500)
    field.classifier = classifier
    field.model_name = classifier.name
    field.image_probabilities = image_probabilities
    field.unfamiliar_share = prediction.unfamiliar_share
    field.status = Field.Status.DONE
    field.progress = 1.0
    field.error = ""
    field.finished_at = timezone.now()
    field.save()


def _cell_prediction(prediction: FieldPrediction, cell: Cell) -> CellPrediction:
    return CellPrediction(
        prediction=prediction,
        cell=cell,
        probabilities=cell.probabilities,
        top_class=cell.top_class,
        top_confidence=cell.top_confidence,
        familiarity=cell.familiarity,
        unfamiliar=cell.unfamiliar,
    )


def _rounded(measurements: dict[str, float | None] | None) -> dict[str, float | None] | None:
    """Measurements to 6 significant digits: a third of the JSON, and more than any of them is worth."""
    if measurements is None:
        return None
    return {name: None if value is None else float(f"{value:.6g}") for name, value in measurements.items()}


def read_stored_field(field: Field) -> FieldImages:
    """The field's channels as stored, with the scale its job was given (None: estimated)."""
    images = read_stored_channels(field)
    job = field.job
    scale = nucleus_diameter_from(pixel_size_um=job.pixel_size_um, nucleus_diameter_px=job.nucleus_diameter_px)
    return dataclasses.replace(images, nucleus_diameter_px=scale) if scale is not None else images


def read_stored_channels(field: Field, *, max_side_px: int | None = None) -> FieldImages:
    """The field's stored channel files (or its multichannel TIFF, through its job's channel mapping) read
    back; `max_side_px` defaults to the installation's upload limit."""
    if max_side_px is None:
        max_side_px = ml_config.max_side_px()
    if field.multichannel:
        with field.multichannel.open("rb") as handle:
            return read_multichannel_tiff(
                handle, max_side_px=max_side_px, channel_mapping=field.job.channel_mapping or None
            )
    handles = {channel: stored.open("rb") for channel, stored in field.channel_files().items()}
    try:
        return read_field(handles, max_side_px=max_side_px)
    finally:
        for handle in handles.values():
            handle.close()


def _field_store_encoded(
    *,
    field_id: int,
    result: FieldResult,
    pictures: EncodedPictures,
    classifier: RegisteredModel | None,
) -> None:
    """Replace the field's results under its row lock; what this run wrote goes again if storing fails.

    `intake.job_delete` takes the same lock: a field deleted first is found gone here (nothing is
    written), a field stored first is deleted with everything stored here. The previous run's
    files go only once the new rows are committed.
    """
    written: list[FieldFile] = []
    try:
        with transaction.atomic():
            field = Field.objects.select_for_update().filter(pk=field_id).first()
            if field is None:
                raise FieldGone(field_id)
            replaced = _stored_names(field)
            _replace_results(
                field,
                result=result,
                pictures=pictures,
                classifier=classifier,
                written=written,
            )
            transaction.on_commit(lambda: stored_files_delete(replaced))
    except BaseException:
        stored_files_delete([(stored.storage, stored.name) for stored in written])
        raise


def _stored_names(field: Field) -> list[tuple]:
    """The (storage, name) of every result file the field has now."""
    stored = [image.file for image in field.images.all()]
    stored += [cell.thumbnail for cell in field.cells.exclude(thumbnail="")]
    stored += [picture for picture in (field.nuclei_labels, field.cell_labels, field.preview) if picture]
    return [(picture.storage, picture.name) for picture in stored]


def _replace_results(
    field: Field,
    *,
    result: FieldResult,
    pictures: EncodedPictures,
    classifier: RegisteredModel | None,
    written: list[FieldFile],
) -> None:
    """Rows and files of one run, in place of the previous run's rows; each file saved is added to `written`."""

    def save(stored: FieldFile, name: str, data: bytes) -> None:
        field_file_save(stored, name, ContentFile(data))
        written.append(stored)

    # The predictions of every model go too: they were made on the previous cells.
    field.predictions.all().delete()
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
                classifier=classifier if probabilities else None,
                familiarity=cell.familiarity,
                unfamiliar=cell.unfamiliar,
                measurements=_rounded(cell.measurements),
                qc_flags=list(cell.qc_flags),
            )
        )
        save(cells[-1].thumbnail, f"{cell.cell_id}.jpg", thumbnail)
    Cell.objects.bulk_create(cells, batch_size=500)
    if classifier is not None and result.image_probabilities is not None:
        prediction = FieldPrediction.objects.create(
            field=field,
            classifier=classifier,
            model_name=classifier.name,
            model_version=classifier.version,
            image_probabilities=list(result.image_probabilities),
            unfamiliar_share=result.unfamiliar_share,
        )
        stored = field.cells.all()  # with primary keys, which bulk_create does not give on every database
        CellPrediction.objects.bulk_create([_cell_prediction(prediction, cell) for cell in stored], batch_size=500)
    for kind, picture in pictures.viewer.items():
        image = FieldImage(field=field, kind=kind, width=pictures.viewer_shape[1], height=pictures.viewer_shape[0])
        save(image.file, picture.file_name, picture.data)
        image.save()
    save(field.nuclei_labels, f"{field.name}_nuclei.png", pictures.nuclei_labels)
    save(field.cell_labels, f"{field.name}_cells.png", pictures.cell_labels)
    save(field.preview, f"{field.name}_preview.jpg", pictures.preview)
    field.segmentation_backend = result.segmentation.backend
    field.channels_used = list(result.segmentation.channels_used)
    field.model_name = result.model_name or ""
    field.classifier = classifier if result.image_probabilities is not None else None
    field.unfamiliar_share = result.unfamiliar_share
    field.image_probabilities = list(result.image_probabilities) if result.image_probabilities is not None else None
    field.timings_s = dict(result.timings_s)
    field.status = Field.Status.DONE
    field.progress = 1.0
    field.error = ""
    field.finished_at = timezone.now()
    field.save()
