"""Every read of the cells app that holds logic: ownership, progress, filters, counts.

Each read takes the requesting user and only ever sees that user's jobs; another user's job,
field or cell is reported as missing (404), never as forbidden, so ids reveal nothing.
"""

from collections import Counter
from dataclasses import dataclass

import numpy as np
from django.db.models import Count, F, FloatField, Prefetch, QuerySet, TextField
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
    qc: str | None = None,
    order: str = "field",
) -> QuerySet[Cell]:
    """The user's cells, each annotated with `confidence`.

    `confidence` is the cell's confidence for `class_index` when one is given, else its top
    confidence. `min_confidence` keeps cells whose `confidence` reaches it (so with a class: the
    cells predicted to show that class at that confidence; a cell may show several classes).
    `unfamiliar` keeps the cells flagged unfamiliar (True) or the familiar ones (False).
    `qc` keeps the cells without quality-control flags ("clean"), with any ("flagged"), or with one flag (its name).
    `order` is one of CELL_ORDERS: "-confidence" (highest first), "confidence" (lowest first) or "field".
    """
    cells = Cell.objects.filter(field__job__owner=user).select_related("field", "classifier")
    if unfamiliar is not None:
        cells = cells.filter(unfamiliar=unfamiliar)
    if qc is not None:
        cells = _filter_qc(cells, qc)
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


def _filter_qc(cells: QuerySet[Cell], qc: str) -> QuerySet[Cell]:
    # The flags list as its JSON text, searched for the quoted name: works on SQLite and PostgreSQL alike.
    cells = cells.annotate(qc_text=Cast("qc_flags", TextField()))
    if qc == "clean":
        return cells.exclude(qc_text__contains='"')
    if qc == "flagged":
        return cells.filter(qc_text__contains='"')
    return cells.filter(qc_text__contains=f'"{qc}"')


@dataclass(frozen=True)
class JobProgress:
    status: str  # queued | running | done | failed | partial
    fraction: float
    counts: dict[str, int]
    total: int  # fields
    cells: int
    seconds_left: float | None = None  # while running, estimated from the finished fields' durations

    @property
    def is_finished(self) -> bool:
        return self.status in {"done", "failed", "partial"}

    @property
    def time_left_text(self) -> str:
        """Such as "about 40 s left" or "about 3 min left"; empty while nothing can be estimated."""
        if self.seconds_left is None:
            return ""
        if self.seconds_left < 60:
            return f"about {max(5, round(self.seconds_left / 5) * 5)} s left"
        return f"about {round(self.seconds_left / 60)} min left"


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
    return JobProgress(
        status=status,
        fraction=fraction,
        counts=dict(counts),
        total=total,
        cells=cells,
        seconds_left=None if status in {"done", "failed", "partial"} else job_seconds_left(fields=fields),
    )


def job_seconds_left(*, fields: list[Field]) -> float | None:
    """Time left: the mean duration of the fields done so far, times the work left (a running field counts
    its share not done), over the fields being processed side by side now (at least one). None before any
    field is done."""
    durations = [
        (field.finished_at - field.started_at).total_seconds()
        for field in fields
        if field.status == Field.Status.DONE and field.started_at and field.finished_at
    ]
    if not durations:
        return None
    work_left = sum(1.0 - field.progress for field in fields if not field.is_finished)
    running = sum(1 for field in fields if field.status in (Field.Status.SEGMENTING, Field.Status.CLASSIFYING))
    return sum(durations) / len(durations) * work_left / max(running, 1)


def cell_top_classes(cell: Cell, *, min_confidence: float = 0.3, limit: int = 5) -> list[tuple[str, float]]:
    """(class name, confidence) of the cell's likeliest classes, most confident first."""
    if cell.probabilities is None:
        return []
    ranked = sorted(enumerate(cell.probabilities), key=lambda item: item[1], reverse=True)
    top = [(CLASS_NAMES[index], confidence) for index, confidence in ranked[:limit] if confidence >= min_confidence]
    return top or [(CLASS_NAMES[ranked[0][0]], ranked[0][1])]


def field_top_classes(*, field: Field, min_confidence: float = 0.1, limit: int = 5) -> list[tuple[str, float]]:
    """(class name, confidence) of the field-level prediction's likeliest classes; empty without one."""
    if not field.image_probabilities:
        return []
    ranked = sorted(enumerate(field.image_probabilities), key=lambda item: item[1], reverse=True)
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
            "qc_flags": list(cell.qc_flags or []),
            "measurements": _panel_measurements(cell.measurements),
        }
        for cell in field.cells.all()
    ]


# The measurements the viewer's cell panel shows (the API and the features exports carry all of them).
PANEL_MEASUREMENTS: tuple[str, ...] = (
    "area_px",
    "perimeter_px",
    "eccentricity",
    "solidity",
    "form_factor",
    "major_axis_px",
    "minor_axis_px",
    "nucleus_area_px",
    "red_mean",
    "green_mean",
    "green_median",
    "green_std",
    "green_max",
    "green_integrated",
    "blue_mean",
    "yellow_mean",
    "green_nucleus_cytoplasm_ratio",
    "green_red_correlation",
    "green_blue_correlation",
    "green_yellow_correlation",
    "focus",
    "haralick_contrast",
    "haralick_correlation",
    "haralick_entropy",
    "haralick_homogeneity",
)


def _panel_measurements(measurements: dict | None) -> dict | None:
    if measurements is None:
        return None
    return {name: measurements[name] for name in PANEL_MEASUREMENTS if measurements.get(name) is not None}


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


# Image labels against predictions (job page, gallery filter, job summary).

LABEL_CALL_CONFIDENCE = 0.5  # a field (or cell) "shows" a class at this confidence
HISTOGRAM_BINS = 10


def label_ranks(*, labels: list[int] | None, probabilities: list[float] | None) -> list[dict]:
    """Each label of a field with its rank among the 19 field-level confidences (1 = the likeliest)."""
    if not labels:
        return []
    order = sorted(range(len(CLASS_NAMES)), key=lambda index: -probabilities[index]) if probabilities else []
    return [
        {
            "index": label,
            "name": CLASS_NAMES[label],
            "rank": order.index(label) + 1 if order else None,
            "confidence": round(probabilities[label], 4) if probabilities else None,
        }
        for label in labels
    ]


def label_agreement(*, labels: list[int] | None, probabilities: list[float] | None) -> float | None:
    """Intersection over union of a field's labels and the classes its prediction shows at
    LABEL_CALL_CONFIDENCE (its top class when none reaches it); None without labels or prediction."""
    if not labels or not probabilities:
        return None
    called = {index for index, p in enumerate(probabilities) if p >= LABEL_CALL_CONFIDENCE}
    called = called or {int(np.argmax(probabilities))}
    known = set(labels)
    return len(known & called) / len(known | called)


def cells_by_field_labels(cells: QuerySet[Cell], *, shows: bool, min_confidence: float) -> QuerySet[Cell]:
    """The cells of labelled fields that show (`shows`) or do not show one of their field's labels at `min_confidence`."""
    chosen = []
    rows = cells.filter(field__image_labels__isnull=False).values_list("pk", "probabilities", "field__image_labels")
    for pk, probabilities, labels in rows:
        if not labels:
            continue
        showing = probabilities is not None and any(probabilities[label] >= min_confidence for label in labels)
        if showing == shows:
            chosen.append(pk)
    return cells.filter(pk__in=chosen)


@dataclass(frozen=True)
class FieldSummary:
    field: Field
    top_classes: list[tuple[str, float]]  # the field-level prediction's three likeliest classes
    labels: list[dict]  # label_ranks
    agreement: float | None


@dataclass(frozen=True)
class JobSummary:
    fields: list[FieldSummary]
    mean_agreement: float | None  # over the labelled, classified fields
    labelled_fields: int
    class_counts: list[ClassCount]  # cells per class at LABEL_CALL_CONFIDENCE
    max_count: int
    histogram: list[dict]  # confidence bins of the cells' top class: low, high, cells, percent


def job_summary(*, job: Job) -> JobSummary:
    """Per field the top classes and the agreement with its labels; cells per class; a histogram of
    the cells' top confidences."""
    summaries = []
    for field in job.fields.order_by("id"):
        probabilities = field.image_probabilities
        ranked = sorted(enumerate(probabilities), key=lambda item: -item[1])[:3] if probabilities else []
        summaries.append(
            FieldSummary(
                field=field,
                top_classes=[(CLASS_NAMES[index], confidence) for index, confidence in ranked],
                labels=label_ranks(labels=field.image_labels, probabilities=probabilities),
                agreement=label_agreement(labels=field.image_labels, probabilities=probabilities),
            )
        )
    agreements = [summary.agreement for summary in summaries if summary.agreement is not None]
    confidences = np.array(
        [c for c in Cell.objects.filter(field__job=job).values_list("top_confidence", flat=True) if c is not None]
    )
    counts, edges = np.histogram(confidences, bins=HISTOGRAM_BINS, range=(0.0, 1.0))
    most = max(int(counts.max()) if len(counts) else 0, 1)
    counted = class_counts(job=job, min_confidence=LABEL_CALL_CONFIDENCE)
    return JobSummary(
        fields=summaries,
        mean_agreement=float(np.mean(agreements)) if agreements else None,
        labelled_fields=sum(1 for summary in summaries if summary.labels),
        class_counts=counted,
        max_count=max([count.cells for count in counted] + [1]),
        histogram=[
            {
                "low": round(float(edges[i]), 2),
                "high": round(float(edges[i + 1]), 2),
                "cells": int(counts[i]),
                "percent": round(100 * int(counts[i]) / most),
            }
            for i in range(HISTOGRAM_BINS)
        ],
    )


JOB_SUMMARY_CSV_HEADER = ("field", "status", "cells", "labels", "label_ranks", "top_classes", "agreement")


def job_summary_rows(*, summary: JobSummary) -> list[tuple]:
    """The job summary as CSV rows: labels and top classes joined by '|', ranks as class:rank."""
    rows = [JOB_SUMMARY_CSV_HEADER]
    for item in summary.fields:
        rows.append(
            (
                item.field.name,
                item.field.status,
                item.field.cells.count(),
                "|".join(str(label["index"]) for label in item.labels),
                " ".join(f"{label['index']}:{label['rank'] or ''}" for label in item.labels),
                "|".join(f"{name}:{confidence:.4f}" for name, confidence in item.top_classes),
                "" if item.agreement is None else f"{item.agreement:.4f}",
            )
        )
    return rows
