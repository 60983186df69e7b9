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
from django.utils import timezone
from knox.models import AuthToken

from cells import ml_config, registry
from cells.models import Cell, CellPrediction, Field, FieldImage, Job, RegisteredModel
from ml.constants import CLASS_NAMES

# The REST convention: a leading "-" sorts descending. Cells without a confidence come last either way.
CELL_ORDERS = {
    "-confidence": (F("confidence").desc(nulls_last=True), "field_id", "label"),
    "confidence": (F("confidence").asc(nulls_last=True), "field_id", "label"),
    "field": ("field_id", "label"),
}
CELL_ORDER_LABELS = {
    "field": "by field, then cell id",
    "-confidence": "confidence, highest first",
    "confidence": "confidence, lowest first",
}


def job_list(*, user) -> QuerySet[Job]:
    """The user's jobs, newest first, their fields prefetched with `cell_count`."""
    fields = Field.objects.annotate(cell_count=Count("cells")).order_by("id")
    return (
        Job.objects.filter(owner=user)
        .select_related("classifier")
        .prefetch_related(Prefetch("fields", queryset=fields.select_related("classifier")))
    )


def job_get(*, user, job_id: int) -> Job:
    """The user's job; another user's job is reported as missing, not as forbidden."""
    return get_object_or_404(job_list(user=user), pk=job_id)


def field_list(*, user, job: Job | None = None) -> QuerySet[Field]:
    """The user's fields (of one job), each with its number of cells as `cell_count`."""
    fields = (
        Field.objects.filter(job__owner=user).select_related("job", "classifier").annotate(cell_count=Count("cells"))
    )
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
    return get_object_or_404(
        Cell.objects.filter(field__job__owner=user).select_related("field", "classifier"), pk=cell_id
    )


def cell_list(
    *,
    user,
    job: Job | None = None,
    field: Field | None = None,
    class_index: int | None = None,
    min_confidence: float | None = None,
    unfamiliar: bool | None = None,
    order: str = "field",
) -> QuerySet[Cell]:
    """The user's cells, each annotated with `confidence`.

    `confidence` is the cell's confidence for `class_index` when one is given, else its top
    confidence. `min_confidence` keeps cells whose `confidence` reaches it (so with a class: the
    cells predicted to show that class at that confidence; a cell may show several classes).
    `unfamiliar` keeps the cells flagged unfamiliar (True) or the familiar ones (False).
    `order` is one of CELL_ORDERS: "-confidence" (highest first), "confidence" (lowest first) or "field".
    """
    cells = Cell.objects.filter(field__job__owner=user).select_related("field", "classifier")
    if unfamiliar is not None:
        cells = cells.filter(unfamiliar=unfamiliar)
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
            "familiarity": None if cell.familiarity is None else round(cell.familiarity, 4),
            "unfamiliar": cell.unfamiliar,
        }
        for cell in field.cells.all()
    ]


def api_token_get(*, user) -> AuthToken | None:
    """The user's newest API token that has not expired (its key is not stored: only when it ends)."""
    return AuthToken.objects.filter(user=user, expiry__gt=timezone.now()).order_by("-created").first()


@dataclass(frozen=True)
class ModelInfo:
    """One entry of the models list: a registered classifier, a builtin segmentation backend (no id), or a
    registered segmentation package pair (a job chooses it as backend "model:<id>")."""

    name: str
    kind: str  # "classifier" | "segmentation"
    available: bool
    description: str
    id: int | None = None
    version: str = ""
    format: str = ""
    is_default: bool = False
    visibility: str = "shared"
    model: RegisteredModel | None = None


SEGMENTATION_DESCRIPTIONS = {
    "classical": "Seeded watershed on the nucleus and cytoplasm channels; needs no weights.",
    "unet": "HPA-compatible DPN-U-Net; needs ML_NUCLEI_WEIGHTS and ML_CELL_WEIGHTS.",
}


def model_list(*, user) -> list[ModelInfo]:
    """The classifiers `user` may choose (shared ones and their own), the builtin segmentation backends
    and the registered segmentation package pairs they may choose."""
    models = [_registered_info(model, kind="classifier") for model in registry.classifiers_for(user)]
    if not any(info.is_default for info in models):
        models.insert(
            0,
            ModelInfo(
                name="",
                kind="classifier",
                available=False,
                description="No default classifier is installed (ML_MODEL_PATH); fields are segmented but not "
                "classified unless a job chooses a model.",
            ),
        )
    models += [
        ModelInfo(
            name=backend,
            kind="segmentation",
            available=available,
            description=SEGMENTATION_DESCRIPTIONS.get(backend, ""),
        )
        for backend, available in ml_config.segmentation_backends().items()
    ]
    models += [_registered_info(model, kind="segmentation") for model in registry.segmenters_for(user)]
    return models


def _registered_info(model: RegisteredModel, *, kind: str) -> ModelInfo:
    return ModelInfo(
        id=model.pk,
        name=model.name,
        version=model.version,
        kind=kind,
        format=model.format,
        available=True,
        description=model.summary,
        is_default=model.is_default,
        visibility=model.visibility,
        model=model,
    )


def model_get(*, user, model_id: int) -> RegisteredModel:
    """A model `user` may see; others' private models are reported as missing."""
    return get_object_or_404(registry.models_visible_to(user), pk=model_id)


def job_models(*, job: Job) -> list[RegisteredModel]:
    """The classifiers a job's fields have predictions of, oldest run first."""
    ids = (
        CellPrediction.objects.filter(prediction__field__job=job)
        .values_list("prediction__classifier", flat=True)
        .distinct()
    )
    return list(RegisteredModel.objects.filter(pk__in=[i for i in ids if i is not None]).order_by("pk"))


@dataclass(frozen=True)
class ModelComparison:
    """How two classifiers' calls on the same cells agree, class by class."""

    first: RegisteredModel
    second: RegisteredModel
    cells: int  # cells both models predicted
    top_class_agreement: float | None  # share of those cells with the same top class
    per_class: list[dict]  # index, name, first, second (cells at min_confidence), both, agreement (Jaccard)
    disagreeing_cell_ids: list[int]  # cells whose top classes differ, most confident disagreement first


def model_comparison(
    *, job: Job, first: RegisteredModel, second: RegisteredModel, min_confidence: float = 0.5
) -> ModelComparison:
    """Compare two classifiers on a job's cells: per class, which cells each calls it at `min_confidence`."""
    rows = CellPrediction.objects.filter(prediction__field__job=job, prediction__classifier__in=[first, second])
    by_cell: dict[int, dict[int, CellPrediction]] = {}
    for row in rows.select_related("prediction"):
        by_cell.setdefault(row.cell_id, {})[row.prediction.classifier_id] = row
    both = {cell_id: pair for cell_id, pair in by_cell.items() if len(pair) == 2}
    per_class = []
    for index, name in enumerate(CLASS_NAMES):
        firsts = {c for c, pair in both.items() if pair[first.pk].probabilities[index] >= min_confidence}
        seconds = {c for c, pair in both.items() if pair[second.pk].probabilities[index] >= min_confidence}
        union = firsts | seconds
        per_class.append(
            {
                "index": index,
                "name": name,
                "first": len(firsts),
                "second": len(seconds),
                "both": len(firsts & seconds),
                "agreement": len(firsts & seconds) / len(union) if union else None,
            }
        )
    differing = [
        (max(pair[first.pk].top_confidence, pair[second.pk].top_confidence), cell_id)
        for cell_id, pair in both.items()
        if pair[first.pk].top_class != pair[second.pk].top_class
    ]
    agreeing = len(both) - len(differing)
    return ModelComparison(
        first=first,
        second=second,
        cells=len(both),
        top_class_agreement=agreeing / len(both) if both else None,
        per_class=per_class,
        disagreeing_cell_ids=[cell_id for _, cell_id in sorted(differing, key=lambda item: (-item[0], item[1]))],
    )


def cell_calls(*, cell_ids: list[int], models: list[RegisteredModel]) -> dict[int, list[tuple[str, float] | None]]:
    """Each cell's top class and confidence by each model, in the order of `models` (None: not run)."""
    rows = CellPrediction.objects.filter(cell_id__in=cell_ids, prediction__classifier__in=models).select_related(
        "prediction"
    )
    found = {(row.cell_id, row.prediction.classifier_id): row for row in rows}
    return {
        cell_id: [
            (CLASS_NAMES[row.top_class], row.top_confidence) if (row := found.get((cell_id, model.pk))) else None
            for model in models
        ]
        for cell_id in cell_ids
    }


def model_ap_bars(*, model: RegisteredModel) -> list[dict]:
    """Per-class validation AP as the model carries it (cell-level when known, else image-level), for a chart."""
    metrics = model.metrics or {}
    per_class = metrics.get("val_ap_per_class") or metrics.get("val_image_ap_per_class") or []
    names = model.class_names or list(CLASS_NAMES)
    return [
        {"name": name, "ap": ap, "percent": None if ap is None else round(100 * ap)}
        for name, ap in zip(names, per_class, strict=False)
    ]
