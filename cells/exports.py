"""A job's results as files: Kaggle submission CSV, COCO JSON, per-cell CSV and 16-bit label images.

Text exports are generators of chunks, so a job of thousands of cells streams to the client
without being held in memory; the label images are written into a zip file object.
"""

import csv
import io
import itertools
import json
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from django.http import FileResponse, Http404, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.utils import timezone

from cells.models import Cell, Field, Job
from ml.constants import CLASS_NAMES
from ml.encoding import SUBMISSION_COLUMNS, SubmissionRow, prediction_string, rle_to_kaggle

_ROWS_PER_QUERY = 500


def _csv_chunks(rows: Iterable[Iterable]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for row in rows:
        writer.writerow(row)
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _fields(job: Job) -> Iterator[Field]:
    return job.fields.select_related("classifier").order_by("id").iterator(chunk_size=_ROWS_PER_QUERY)


def _cells(job: Job) -> Iterator[Cell]:
    return (
        Cell.objects.filter(field__job=job)
        .select_related("field", "classifier")
        .order_by("field_id", "label")
        .iterator(chunk_size=_ROWS_PER_QUERY)
    )


def submission_rows(*, job: Job) -> Iterator[SubmissionRow]:
    """One Kaggle submission row per field, every class of every classified cell; unclassified cells give none."""
    for field in _fields(job):
        cells = [
            (rle_to_kaggle(mask_rle), probabilities)
            for mask_rle, probabilities in field.cells.order_by("label").values_list("mask_rle", "probabilities")
            if probabilities is not None
        ]
        yield SubmissionRow(
            image_id=field.name, width=field.width, height=field.height, prediction_string=prediction_string(cells)
        )


def submission_csv(*, job: Job) -> Iterator[str]:
    """The Kaggle submission (`ID,ImageWidth,ImageHeight,PredictionString`), field by field."""
    rows = ((row.image_id, row.width, row.height, row.prediction_string) for row in submission_rows(job=job))
    return _csv_chunks(itertools.chain([SUBMISSION_COLUMNS], rows))


CELLS_CSV_HEADER = (
    "field",
    "cell_id",
    "min_row",
    "min_col",
    "max_row",
    "max_col",
    "area_px",
    *CLASS_NAMES,
    "model_name",
    "model_version",
    "familiarity",
    "unfamiliar",
)


def _model_of(item: Cell | Field) -> tuple[str, str]:
    """(name, version) of the classifier behind a cell's or field's predictions; empty when unclassified."""
    if item.classifier is not None:
        return item.classifier.name, item.classifier.version
    return item.model_name, ""


def cells_csv(*, job: Job) -> Iterator[str]:
    """One row per cell: field, cell id, bounding box (half-open, px), area, the 19 confidences (empty when
    unclassified), the model that made them, the cell's familiarity to it and its unfamiliar flag (1/0)."""

    def rows():
        yield CELLS_CSV_HEADER
        for cell in _cells(job):
            probabilities = (
                [f"{p:.6f}" for p in cell.probabilities] if cell.probabilities is not None else [""] * len(CLASS_NAMES)
            )
            familiarity = "" if cell.familiarity is None else f"{cell.familiarity:.6f}"
            unfamiliar = "" if cell.unfamiliar is None else int(cell.unfamiliar)
            yield (
                cell.field.name,
                cell.label,
                *cell.bbox,
                cell.area_px,
                *probabilities,
                *_model_of(cell),
                familiarity,
                unfamiliar,
            )

    return _csv_chunks(rows())


# Annotations scoring below this are left out unless asked for: most of a cell's 19 scores are near 0.
COCO_DEFAULT_MIN_CONFIDENCE = 0.01


def coco_categories() -> list[dict]:
    """The 19 classes. COCO tools reserve category id 0, so id = HPA label + 1; `hpa_label` is the label
    of the submission CSV (0 = Nucleoplasm ... 18 = Negative)."""
    return [
        {"id": index + 1, "name": name, "supercategory": "localisation", "hpa_label": index}
        for index, name in enumerate(CLASS_NAMES)
    ]


def _coco_file_names(field: Field) -> tuple[str, list[str]]:
    """(the image COCO points at: the protein channel, or the 4-plane TIFF; every channel file), as uploaded."""
    stored = field.channel_files() or ({"multichannel": field.multichannel} if field.multichannel else {})
    names = {slot: f"{field.name}_{slot}{Path(file.name).suffix.lower()}" for slot, file in stored.items()}
    if "multichannel" in names:
        names["multichannel"] = f"{field.name}{Path(field.multichannel.name).suffix.lower()}"
    main = names.get("green") or names.get("multichannel") or f"{field.name}.png"
    return main, sorted(names.values())


def _coco_image(field: Field) -> dict:
    file_name, channel_files = _coco_file_names(field)
    model_name, model_version = _model_of(field)
    return {
        "id": field.pk,
        "file_name": file_name,
        "channel_files": channel_files,
        "width": field.width,
        "height": field.height,
        "model": model_name,
        "model_version": model_version,
        "segmentation_backend": field.segmentation_backend,
        "channels_used": field.channels_used,
        "unfamiliar_share": field.unfamiliar_share,
    }


def coco_json(*, job: Job, min_confidence: float = COCO_DEFAULT_MIN_CONFIDENCE) -> Iterator[str]:
    """COCO instance segmentation results that `pycocotools.coco.COCO` loads.

    images: one per field (id = field id; `file_name` its protein channel as uploaded, `channel_files`
    all of them); categories: `coco_categories()`; annotations: one per classified cell and class
    whose confidence reaches `min_confidence` (COCO_DEFAULT_MIN_CONFIDENCE by default; 0 gives all
    19, as the Kaggle submission), with the cell's compressed RLE, bbox [x, y, width, height], area
    and the class confidence as score. Unclassified cells have no annotation (their masks are in
    the label images).
    """
    fields = list(_fields(job))
    header = {
        "info": {
            "description": f"hpaweb job {job.pk}: {job}",
            "version": "1.0",
            "date_created": timezone.now().isoformat(timespec="seconds"),
            **_provenance(job, fields),
        },
        "licenses": [],
        "images": [_coco_image(field) for field in fields],
        "categories": coco_categories(),
    }
    yield json.dumps(header)[:-1] + ', "annotations": ['
    annotation_id = 0
    for cell in _cells(job):
        if cell.probabilities is None:
            continue
        min_row, min_col, max_row, max_col = cell.bbox
        for class_index, confidence in enumerate(cell.probabilities):
            if confidence < min_confidence:
                continue
            annotation_id += 1
            annotation = {
                "id": annotation_id,
                "image_id": cell.field_id,
                "category_id": class_index + 1,
                "hpa_label": class_index,
                "segmentation": cell.mask_rle,
                "bbox": [min_col, min_row, max_col - min_col, max_row - min_row],
                "area": cell.area_px,
                "score": round(float(confidence), 6),
                "iscrowd": 0,
                "cell_id": cell.label,
                "familiarity": cell.familiarity,
                "unfamiliar": cell.unfamiliar,
            }
            yield ("" if annotation_id == 1 else ", ") + json.dumps(annotation)
    yield "]}"


def _provenance(job: Job, fields: list[Field]) -> dict:
    """What made the job's results: its classifier, segmentation backend and the channels used."""
    model_name, model_version = (job.classifier.name, job.classifier.version) if job.classifier else ("", "")
    return {
        "model": model_name,
        "model_version": model_version,
        "models": sorted({"{} {}".format(*_model_of(field)).strip() for field in fields if field.model_name}),
        "segmentation_backend": job.segmentation_backend,
        "channels_used": sorted({channel for field in fields for channel in field.channels_used}),
    }


def labels_manifest(*, job: Job) -> dict:
    """What the label-image zip holds and what made it, field by field."""
    fields = list(_fields(job))
    return {
        "job": {"id": job.pk, "name": str(job)},
        "date_created": timezone.now().isoformat(timespec="seconds"),
        **_provenance(job, fields),
        "format": "16-bit grayscale PNG; 0 = background; cell i contains nucleus i",
        "fields": [
            {
                "name": field.name,
                "width": field.width,
                "height": field.height,
                "cells": f"{field.name}_cells.png" if field.cell_labels else None,
                "nuclei": f"{field.name}_nuclei.png" if field.nuclei_labels else None,
                "cell_count": field.cells.count(),
                "segmentation_backend": field.segmentation_backend,
                "channels_used": field.channels_used,
                "model": _model_of(field)[0],
                "model_version": _model_of(field)[1],
            }
            for field in fields
        ],
    }


def write_labels_zip(*, job: Job, out: BinaryIO) -> None:
    """Each processed field's cell and nucleus labels (16-bit PNG, 0 = background, cell i holds nucleus i),
    and `manifest.json` (`labels_manifest`)."""
    # PNG is compressed already: storing saves time and costs no space.
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("manifest.json", json.dumps(labels_manifest(job=job), indent=2))
        for field in _fields(job):
            for stored, suffix in ((field.cell_labels, "cells"), (field.nuclei_labels, "nuclei")):
                if stored:
                    with stored.open("rb") as handle, archive.open(f"{field.name}_{suffix}.png", "w") as entry:
                        while chunk := handle.read(1024 * 1024):
                            entry.write(chunk)


# name -> (what it is, content type, file name suffix)
EXPORTS: dict[str, tuple[str, str, str]] = {
    "submission": ("Kaggle submission CSV", "text/csv", "submission.csv"),
    "coco": ("COCO instance segmentation JSON", "application/json", "coco.json"),
    "cells": ("Per-cell CSV", "text/csv", "cells.csv"),
    "labels": ("16-bit label images (zip)", "application/zip", "labels.zip"),
}


def export_filename(*, job: Job, suffix: str) -> str:
    """job-{id}-{model}-v{version}-{suffix}: a download says which model made it."""
    if job.classifier is None:
        return f"job-{job.pk}-{suffix}"
    model = "".join(char if char.isalnum() or char in "-_." else "-" for char in job.classifier.name)
    return f"job-{job.pk}-{model}-v{job.classifier.version}-{suffix}"


def export_response(*, job: Job, export: str, **options) -> HttpResponseBase:
    """The export as a download named job-{id}-{suffix}; text exports stream. `options` go to the builder
    (`min_confidence` for COCO)."""
    if export not in EXPORTS:
        raise Http404(f"No export named {export!r}; choose one of {', '.join(EXPORTS)}.")
    _, content_type, suffix = EXPORTS[export]
    filename = export_filename(job=job, suffix=suffix)
    if export == "labels":
        archive = tempfile.SpooledTemporaryFile(max_size=64 * 1024**2)  # noqa: SIM115 (the response closes it once sent)
        write_labels_zip(job=job, out=archive)
        archive.seek(0)
        return FileResponse(archive, content_type=content_type, as_attachment=True, filename=filename)
    chunks = {"submission": submission_csv, "coco": coco_json, "cells": cells_csv}[export](job=job, **options)
    response = StreamingHttpResponse(chunks, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
