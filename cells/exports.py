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
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import tifffile
from django.http import FileResponse, Http404, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.utils import timezone
from PIL import Image

from cells import processing
from cells.curation import coco_annotated_entries
from cells.models import Cell, Field, Job
from cells.selectors import job_summary, job_summary_rows
from ml.constants import CHANNELS, CLASS_NAMES
from ml.encoding import SUBMISSION_COLUMNS, SubmissionRow, prediction_string, rle_to_kaggle
from ml.measure import measurement_names
from ml.qc import QC_FLAGS

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


def _cells(job: Job, field: Field | None = None) -> Iterator[Cell]:
    cells = Cell.objects.filter(field__job=job) if field is None else Cell.objects.filter(field=field)
    return (
        cells.select_related("field", "classifier").order_by("field_id", "label").iterator(chunk_size=_ROWS_PER_QUERY)
    )


def parse_exclude_qc(text: str) -> list[str]:
    """Quality-control flags named in a comma-separated list, or `all` for every one; a ValueError names a wrong one."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if names == ["all"]:
        return list(QC_FLAGS)
    unknown = [name for name in names if name not in QC_FLAGS]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not a quality-control flag; use {', '.join(QC_FLAGS)} or all.")
    return names


def submission_rows(*, job: Job, exclude_qc: Collection[str] = ()) -> Iterator[SubmissionRow]:
    """One Kaggle submission row per field, every class of every classified cell; unclassified cells give none,
    nor do cells carrying any of the quality-control flags `exclude_qc` names (`ml.qc.QC_FLAGS`)."""
    excluded = set(exclude_qc)
    for field in _fields(job):
        cells = [
            (rle_to_kaggle(mask_rle), probabilities)
            for mask_rle, probabilities, flags in field.cells.order_by("label").values_list(
                "mask_rle", "probabilities", "qc_flags"
            )
            if probabilities is not None and not excluded.intersection(flags or ())
        ]
        yield SubmissionRow(
            image_id=field.name, width=field.width, height=field.height, prediction_string=prediction_string(cells)
        )


def submission_csv(*, job: Job, exclude_qc: Collection[str] = ()) -> Iterator[str]:
    """The Kaggle submission (`ID,ImageWidth,ImageHeight,PredictionString`), field by field; cells flagged with
    any of `exclude_qc` are left out."""
    rows = (
        (row.image_id, row.width, row.height, row.prediction_string)
        for row in submission_rows(job=job, exclude_qc=exclude_qc)
    )
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
    "qc_flags",
)


def _model_of(item: Cell | Field) -> tuple[str, str]:
    """(name, version) of the classifier behind a cell's or field's predictions; empty when unclassified."""
    if item.classifier is not None:
        return item.classifier.name, item.classifier.version
    return item.model_name, ""


def cells_csv(*, job: Job, field: Field | None = None) -> Iterator[str]:
    """One row per cell (of one `field` when given): field, cell id, bounding box (half-open, px), area, the 19
    confidences (empty when unclassified), the model that made them, the cell's familiarity and unfamiliar flag (1/0)."""

    def rows():
        yield CELLS_CSV_HEADER
        for cell in _cells(job, field):
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
                "|".join(cell.qc_flags or ()),
            )

    return _csv_chunks(rows())


def _feature_names(job: Job) -> list[str]:
    """The measurement names of the job's cells, in `ml.measure` order (every measured cell has the same).

    The order comes from `ml.measure`, not from the stored JSON: PostgreSQL's jsonb keeps keys in its own order."""
    first = Cell.objects.filter(field__job=job, measurements__isnull=False).order_by("field_id", "label").first()
    if first is None:
        return []
    canonical = measurement_names(texture=True, scattering=True)
    position = {name: index for index, name in enumerate(canonical)}
    return sorted(first.measurements, key=lambda name: (position.get(name, len(canonical)), name))


FEATURES_ID_COLUMNS = ("field", "cell_id", "qc_flags")


def features_csv(*, job: Job) -> Iterator[str]:
    """One row per cell: field, cell id, its quality-control flags (joined by |) and every measurement
    (`ml.measure`: shape, intensity per channel, textures), empty where it does not apply."""
    names = _feature_names(job)

    def rows():
        yield (*FEATURES_ID_COLUMNS, *names)
        for cell in _cells(job):
            measured = cell.measurements or {}
            values = ("" if measured.get(name) is None else f"{measured[name]:.6g}" for name in names)
            yield (cell.field.name, cell.label, "|".join(cell.qc_flags or ()), *values)

    return _csv_chunks(rows())


def write_features_parquet(*, job: Job, out: BinaryIO) -> None:
    """The features table (`features_csv`'s columns) as Parquet: measurements float64 (null where they do not
    apply), `qc_flags` a list of strings."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = _feature_names(job)
    fields, labels, flags = [], [], []
    columns: dict[str, list] = {name: [] for name in names}
    for cell in _cells(job):
        fields.append(cell.field.name)
        labels.append(cell.label)
        flags.append(list(cell.qc_flags or ()))
        measured = cell.measurements or {}
        for name in names:
            columns[name].append(measured.get(name))
    table = pa.table(
        {
            "field": pa.array(fields, pa.string()),
            "cell_id": pa.array(labels, pa.int64()),
            "qc_flags": pa.array(flags, pa.list_(pa.string())),
            **{name: pa.array(values, pa.float64()) for name, values in columns.items()},
        }
    )
    pq.write_table(table, out)


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
                "qc_flags": list(cell.qc_flags or ()),
            }
            yield ("" if annotation_id == 1 else ", ") + json.dumps(annotation)
    # The classes users gave cells (cells.curation), beside the model's scores.
    for annotated in coco_annotated_entries(job=job):
        annotation_id += 1
        yield ("" if annotation_id == 1 else ", ") + json.dumps({"id": annotation_id, **annotated})
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
    "features": ("Per-cell features CSV", "text/csv", "features.csv"),
    "features-parquet": ("Per-cell features Parquet", "application/vnd.apache.parquet", "features.parquet"),
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
    if export == "features-parquet":
        table = tempfile.SpooledTemporaryFile(max_size=64 * 1024**2)  # noqa: SIM115 (the response closes it once sent)
        write_features_parquet(job=job, out=table)
        table.seek(0)
        return FileResponse(table, content_type=content_type, as_attachment=True, filename=filename)
    builders = {"submission": submission_csv, "coco": coco_json, "cells": cells_csv, "features": features_csv}
    chunks = builders[export](job=job, **options)
    response = StreamingHttpResponse(chunks, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def job_summary_response(*, job: Job) -> StreamingHttpResponse:
    """The job summary (`selectors.job_summary`) as a CSV download: per field its labels, their ranks,
    the top classes and the agreement."""
    rows = job_summary_rows(summary=job_summary(job=job))
    response = StreamingHttpResponse(_csv_chunks(rows), content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="{export_filename(job=job, suffix="summary.csv")}"'
    return response


CROP_FORMATS = ("png", "tiff")


def _field_channels(field: Field) -> np.ndarray:
    """The field's four channels at full resolution and its own bit depth, (4, H, W) in CHANNELS order
    (a channel it was uploaded without is zeros)."""
    images = processing.read_stored_channels(field, max_side_px=max(field.width, field.height))
    dtype = np.uint16 if images.bit_depth == 16 else np.uint8
    return np.rint(images.stack() * np.iinfo(dtype).max).astype(dtype)


def _png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def write_crops_zip(*, cells: Iterable[Cell], out: BinaryIO, image_format: str = "png") -> int:
    """Each cell's bounding box cut from its field's four channels at full resolution and the field's bit
    depth, with its mask; returns the number of cells written.

    png: `{field}/cell-{label}_{channel}.png` for red, green, blue and yellow (a channel the field lacks
    is black); tiff: `{field}/cell-{label}.tif`, 4 planes in that order. Both: `{field}/cell-{label}_mask.png`
    (255 inside the cell) and `crops.csv` (field, cell id, box, area, top class, confidence)."""
    if image_format not in CROP_FORMATS:
        raise ValueError(f"Crops come as {' or '.join(CROP_FORMATS)}, not {image_format!r}.")
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(
        ("field", "cell_id", "min_row", "min_col", "max_row", "max_col", "area_px", "top_class", "confidence", "files")
    )
    written = 0
    ordered = sorted(cells, key=lambda cell: (cell.field_id, cell.label))
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        for _, field_cells in itertools.groupby(ordered, key=lambda cell: cell.field_id):
            field_cells = list(field_cells)
            field = field_cells[0].field
            if not field.cell_labels:
                continue
            channels = _field_channels(field)
            with field.cell_labels.open("rb") as handle, Image.open(handle) as labels_image:
                labels = np.asarray(labels_image)
            for cell in field_cells:
                top, left, bottom, right = cell.bbox
                crop = channels[:, top:bottom, left:right]
                base = f"{field.name}/cell-{cell.label}"
                if image_format == "png":
                    names = [f"{base}_{channel}.png" for channel in CHANNELS]
                    for name, plane in zip(names, crop, strict=True):
                        archive.writestr(name, _png_bytes(plane))
                else:
                    names = [f"{base}.tif"]
                    buffer = io.BytesIO()
                    tifffile.imwrite(buffer, crop, photometric="minisblack", metadata={"axes": "CYX"})
                    archive.writestr(names[0], buffer.getvalue(), compress_type=zipfile.ZIP_DEFLATED)
                mask = np.where(labels[top:bottom, left:right] == cell.label, 255, 0).astype(np.uint8)
                archive.writestr(f"{base}_mask.png", _png_bytes(mask))
                top_class = "" if cell.top_class is None else CLASS_NAMES[cell.top_class]
                confidence = "" if cell.top_confidence is None else f"{cell.top_confidence:.6f}"
                writer.writerow(
                    (field.name, cell.label, *cell.bbox, cell.area_px, top_class, confidence, " ".join(names))
                )
                written += 1
        archive.writestr("crops.csv", table.getvalue(), compress_type=zipfile.ZIP_DEFLATED)
    return written


def crops_response(*, job: Job, cells: Iterable[Cell], image_format: str, name: str = "crops") -> FileResponse:
    """A zip of `cells`' crops (`write_crops_zip`) as a download named after the job and its model."""
    archive = tempfile.SpooledTemporaryFile(max_size=64 * 1024**2)  # noqa: SIM115 (the response closes it once sent)
    write_crops_zip(cells=cells, out=archive, image_format=image_format)
    archive.seek(0)
    filename = export_filename(job=job, suffix=f"{name}-{image_format}.zip")
    return FileResponse(archive, content_type="application/zip", as_attachment=True, filename=filename)


def write_job_zip(*, job: Job, out: BinaryIO) -> None:
    """Everything the job produced, in one zip: the Kaggle submission, COCO JSON, per-cell CSV, the label images
    (`labels/`, with their manifest) and every cell's crops as PNG (`crops/`)."""
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for export, builder in (("submission", submission_csv), ("coco", coco_json), ("cells", cells_csv)):
            with archive.open(EXPORTS[export][2], "w") as entry:
                for chunk in builder(job=job):
                    entry.write(chunk.encode())
        labels = io.BytesIO()
        write_labels_zip(job=job, out=labels)
        with zipfile.ZipFile(labels) as inner:
            for info in inner.infolist():
                archive.writestr(f"labels/{info.filename}", inner.read(info), compress_type=zipfile.ZIP_STORED)
        crops = io.BytesIO()
        write_crops_zip(cells=_cells(job), out=crops)
        with zipfile.ZipFile(crops) as inner:
            for info in inner.infolist():
                archive.writestr(f"crops/{info.filename}", inner.read(info), compress_type=zipfile.ZIP_STORED)


def job_zip_response(*, job: Job) -> FileResponse:
    archive = tempfile.SpooledTemporaryFile(max_size=64 * 1024**2)  # noqa: SIM115 (the response closes it once sent)
    write_job_zip(job=job, out=archive)
    archive.seek(0)
    return FileResponse(
        archive, content_type="application/zip", as_attachment=True, filename=export_filename(job=job, suffix="all.zip")
    )


def field_cells_csv_response(*, field: Field) -> StreamingHttpResponse:
    """One field's per-cell CSV (`cells_csv`), named after the job and the field."""
    response = StreamingHttpResponse(cells_csv(job=field.job, field=field), content_type="text/csv")
    filename = export_filename(job=field.job, suffix=f"{field.name}-cells.csv")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
