"""Every read of the cells app that holds logic: ownership, progress, filters, counts.

Each read takes the requesting user and only ever sees that user's jobs; another user's job,
field or cell is reported as missing (404), never as forbidden, so ids reveal nothing.
"""

from collections import Counter
from dataclasses import dataclass

import numpy as np
from django.db.models import Count, F, FloatField, Prefetch, QuerySet
from django.db.models.fields.files import FieldFile
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast
from django.http import Http404
from django.shortcuts import get_object_or_404
from rest_framework.authtoken.models import Token

from cells import ml_config
from cells.models import Cell, Field, FieldImage, Job
from ml.constants import CLASS_NAMES

CELL_ORDERS = {
    "confidence": (F("confidence").desc(nulls_last=True), "field_id", "label"),
    "-confidence": (F("confidence").asc(nulls_last=True), "field_id", "label"),
    "field": ("field_id", "label"),
}


def job_list(*, user) -> QuerySet[Job]:
    """The user's jobs, newest first, their fields prefetched with `cell_count`."""
    fields = Field.objects.annotate(cell_count=Count("cells")).order_by("id")
    return Job.objects.filter(owner=user).prefetch_related(Prefetch("fields", queryset=fields))


def job_get(*, user, job_id: int) -> Job:
    """The user's job; another user's job is reported as missing, not as forbidden."""
    return get_object_or_404(job_list(user=user), pk=job_id)


def field_list(*, user, job: Job | None = None) -> QuerySet[Field]:
    """The user's fields (of one job), each with its number of cells as `cell_count`."""
    fields = Field.objects.filter(job__owner=user).select_related("job").annotate(cell_count=Count("cells"))
    if job is not None:
        fields = fields.filter(job=job)
    return fields.order_by("job_id", "id")


def field_get(*, user, field_id: int) -> Field:
    return get_object_or_404(field_list(user=user), pk=field_id)


def field_image_get(*, user, field_id: int, kind: str) -> FieldImage:
    return get_object_or_404(FieldImage.objects.filter(field__job__owner=user), field_id=field_id, kind=kind)


def field_labels_get(*, user, field_id: int, kind: str) -> tuple[Field, FieldFile]:
    """The user's field and its 16-bit label image of `kind` ("cells" or "nuclei"); 404 when it has none yet."""
    field = field_get(user=user, field_id=field_id)
    stored = {"cells": field.cell_labels, "nuclei": field.nuclei_labels}.get(kind)
    if not stored:
        raise Http404("This field has no label image of that kind yet.")
    return field, stored


def field_neighbours(*, field: Field) -> tuple[Field | None, Field | None]:
    """The fields before and after this one in its job, for paging through a batch."""
    siblings = Field.objects.filter(job_id=field.job_id)
    return (
        siblings.filter(id__lt=field.id).order_by("-id").first(),
        siblings.filter(id__gt=field.id).order_by("id").first(),
    )


def cell_get(*, user, cell_id: int) -> Cell:
    return get_object_or_404(Cell.objects.filter(field__job__owner=user).select_related("field"), pk=cell_id)


def cell_list(
    *,
    user,
    job: Job | None = None,
    field: Field | None = None,
    class_index: int | None = None,
    min_confidence: float | None = None,
    order: str = "field",
) -> QuerySet[Cell]:
    """The user's cells, each annotated with `confidence`.

    `confidence` is the cell's confidence for `class_index` when one is given, else its top
    confidence. `min_confidence` keeps cells whose `confidence` reaches it (so with a class: the
    cells predicted to show that class at that confidence; a cell may show several classes).
    `order` is one of CELL_ORDERS: "confidence" (highest first), "-confidence" or "field".
    """
    cells = Cell.objects.filter(field__job__owner=user).select_related("field")
    if job is not None:
        cells = cells.filter(field__job=job)
    if field is not None:
        cells = cells.filter(field=field)
    if class_index is not None:
        # The JSON array element, cast to a number; works on SQLite and PostgreSQL.
        cells = cells.annotate(confidence=Cast(KeyTextTransform(str(class_index), "probabilities"), FloatField()))
    else:
        cells = cells.annotate(confidence=F("top_confidence"))
    if min_confidence is not None:
        cells = cells.filter(confidence__gte=min_confidence)
    return cells.order_by(*CELL_ORDERS[order])


@dataclass(frozen=True)
class JobProgress:
    status: str  # queued | running | done | failed | partial
    fraction: float
    counts: dict[str, int]
    total: int  # fields
    cells: int

    @property
    def is_finished(self) -> bool:
        return self.status in {"done", "failed", "partial"}


def job_progress(*, job: Job) -> JobProgress:
    fields = list(job.fields.all())
    counts = Counter(field.status for field in fields)
    total = len(fields)
    done, failed = counts[Field.Status.DONE], counts[Field.Status.FAILED]
    if total and done == total:
        status = "done"
    elif total and failed == total:
        status = "failed"
    elif total and done + failed == total:
        status = "partial"
    elif counts[Field.Status.QUEUED] == total:
        status = "queued"
    else:
        status = "running"
    fraction = sum(1.0 if field.is_finished else field.progress for field in fields) / total if total else 0.0
    cells = sum(field.cell_count if hasattr(field, "cell_count") else field.cells.count() for field in fields)
    return JobProgress(status=status, fraction=fraction, counts=dict(counts), total=total, cells=cells)


def cell_top_classes(cell: Cell, *, min_confidence: float = 0.3, limit: int = 5) -> list[tuple[str, float]]:
    """(class name, confidence) of the cell's likeliest classes, most confident first."""
    if cell.probabilities is None:
        return []
    ranked = sorted(enumerate(cell.probabilities), key=lambda item: item[1], reverse=True)
    top = [(CLASS_NAMES[index], confidence) for index, confidence in ranked[:limit] if confidence >= min_confidence]
    return top or [(CLASS_NAMES[ranked[0][0]], ranked[0][1])]


def job_is_classified(*, job: Job) -> bool:
    """Whether any cell of the job has class predictions (none do without a trained model)."""
    return Cell.objects.filter(field__job=job, probabilities__isnull=False).exists()


@dataclass(frozen=True)
class ClassCount:
    index: int
    name: str
    cells: int


def class_counts(*, job: Job, min_confidence: float) -> list[ClassCount]:
    """For each of the 19 classes, how many of the job's cells show it with at least `min_confidence`."""
    rows = [p for p in Cell.objects.filter(field__job=job).values_list("probabilities", flat=True) if p is not None]
    probabilities = np.array(rows, dtype=np.float64).reshape(-1, len(CLASS_NAMES))
    counts = (probabilities >= min_confidence).sum(axis=0)
    return [ClassCount(index=index, name=name, cells=int(counts[index])) for index, name in enumerate(CLASS_NAMES)]


def viewer_cells(*, field: Field) -> list[dict]:
    """What the field viewer needs to know of each cell, keyed by the id in the cell-id image."""
    return [
        {
            "id": cell.pk,
            "label": cell.label,
            "bbox": list(cell.bbox),
            "area_px": cell.area_px,
            "probabilities": None if cell.probabilities is None else [round(p, 4) for p in cell.probabilities],
        }
        for cell in field.cells.all()
    ]


def api_token_get(*, user) -> Token | None:
    return Token.objects.filter(user=user).first()


@dataclass(frozen=True)
class ModelInfo:
    name: str
    kind: str  # "classifier" | "segmentation"
    available: bool
    description: str


def model_list() -> list[ModelInfo]:
    """The models this installation can use: the cell classifier and the segmentation backends."""
    classifier_path = ml_config.classifier_path()
    descriptions = {
        "classical": "Seeded watershed on the nucleus and cytoplasm channels; needs no weights.",
        "unet": "HPA-compatible DPN-U-Net; needs ML_NUCLEI_WEIGHTS and ML_CELL_WEIGHTS.",
    }
    models = [
        ModelInfo(
            name=classifier_path.stem if classifier_path is not None else "",
            kind="classifier",
            available=classifier_path is not None,
            description=(
                f"Cell classifier over the {len(CLASS_NAMES)} HPA classes."
                if classifier_path is not None
                else "No trained classifier is installed (ML_MODEL_PATH); fields are segmented but not classified."
            ),
        )
    ]
    models += [
        ModelInfo(name=backend, kind="segmentation", available=available, description=descriptions.get(backend, ""))
        for backend, available in ml_config.segmentation_backends().items()
    ]
    return models
