"""Cell annotations: a user's call on a cell (its classes, or "not a cell", "badly outlined").

Each annotation records who made it, when, and the prediction it corrected (the model and its 19
confidences at that moment). Annotations are never edited: a new one supersedes the cell's
current one, and undoing marks one undone (the one before it becomes current again).

Two tabs (or two people) annotating the same cell are told apart by the cell's annotation
version (`cell_version`): every annotation and every undo on a cell raises it by one. A writer
that sends the version it saw gets `AnnotationConflict` (HTTP 409) when the cell changed since,
and nothing is stored.

A mask fix (`cells.mask_edits`) replaces a field's cells; `annotations_relink` then attaches each
annotation to the cell that has its label and the same mask as when it was made, and detaches
the others, so undoing the fix attaches them again.
"""

import csv
import hashlib
import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from cells.models import Cell, CellAnnotation, Field, Job, JobShare
from ml.constants import CLASS_NAMES, NUM_CLASSES

ANNOTATION_CSV_HEADER = (
    "field",
    "cell_id",
    "kind",
    "classes",
    "class_names",
    "author",
    "created_at",
    "corrected_model",
    "corrected_top_class",
    "undone_at",
)
# What an import needs; the other columns of an export are read back as they are ignored.
IMPORT_COLUMNS = ("field", "cell_id", "classes")
MAX_IMPORT_BYTES = 8 * 1024 * 1024


class AnnotationConflict(ValidationError):
    """The cell was annotated (or an annotation undone) since the writer loaded it."""


def mask_digest(mask_rle: dict) -> str:
    """A fingerprint of a cell's mask: its RLE size and counts."""
    return hashlib.sha256(f"{mask_rle['size']}:{mask_rle['counts']}".encode()).hexdigest()


def cell_version(*, field_id: int, cell_label: int) -> int:
    """How many annotation actions the cell has had (annotations made plus annotations undone)."""
    rows = CellAnnotation.objects.filter(field_id=field_id, cell_label=cell_label)
    return rows.count() + rows.filter(undone_at__isnull=False).count()


def current_annotation(*, cell: Cell) -> CellAnnotation | None:
    """The cell's newest annotation that is not undone and was made on its present mask."""
    return cell.annotations.filter(undone_at__isnull=True).order_by("-created_at", "-id").first()


def current_annotations(*, cells: Iterable[Cell]) -> dict[int, CellAnnotation]:
    """cell id -> its current annotation, for the cells that have one."""
    ids = [cell.pk for cell in cells]
    found: dict[int, CellAnnotation] = {}
    rows = CellAnnotation.objects.filter(cell_id__in=ids, undone_at__isnull=True).order_by("created_at", "id")
    for annotation in rows.select_related("author"):
        found[annotation.cell_id] = annotation  # the newest wins
    return found


def _check_call(kind: str, classes: Sequence[int]) -> list[int]:
    if kind not in CellAnnotation.Kind.values:
        raise ValidationError(f"An annotation is one of {', '.join(CellAnnotation.Kind.values)}; got {kind!r}.")
    chosen = sorted({int(index) for index in classes})
    if any(not 0 <= index < NUM_CLASSES for index in chosen):
        raise ValidationError(f"Classes are numbers 0 to {NUM_CLASSES - 1} (0 = Nucleoplasm ... 18 = Negative).")
    if kind == CellAnnotation.Kind.CLASSES and not chosen:
        raise ValidationError("Choose at least one class for the cell, or mark it as not a cell or badly outlined.")
    if kind != CellAnnotation.Kind.CLASSES and chosen:
        raise ValidationError("A cell marked as not a cell or badly outlined takes no classes; send none.")
    return chosen


def _conflict(cell: Cell, *, seen: int, now: int) -> AnnotationConflict:
    return AnnotationConflict(
        f"Cell {cell.label} of field {cell.field.name} was annotated elsewhere since you loaded it "
        f"(version {now}, you had {seen}); nothing was saved. Reload to see its current annotation, then try again."
    )


@dataclass(frozen=True)
class CellCall:
    """One cell to annotate, with the annotation version the writer saw (None: do not check)."""

    cell: Cell
    version: int | None = None


@transaction.atomic
def annotations_create(
    *, user: AbstractBaseUser, calls: Sequence[CellCall], kind: str, classes: Sequence[int] = ()
) -> list[CellAnnotation]:
    """Annotate one or more cells alike (the gallery annotates several at once); all or nothing.

    The cells must belong to `user`'s jobs (the caller fetched them through the selectors)."""
    if not calls:
        raise ValidationError("Choose at least one cell to annotate.")
    chosen = _check_call(kind, classes)
    # Lock the fields, so two writers of one cell take turns between reading and raising its version.
    field_ids = sorted({call.cell.field_id for call in calls})
    list(Field.objects.select_for_update().filter(pk__in=field_ids).values_list("pk", flat=True))
    for call in calls:
        if call.cell.field.job.owner_id != user.pk:
            raise ValidationError("Only the owner of a job annotates its cells.")
        if call.version is not None:
            now = cell_version(field_id=call.cell.field_id, cell_label=call.cell.label)
            if now != call.version:
                raise _conflict(call.cell, seen=call.version, now=now)
    created = []
    for call in calls:
        cell = call.cell
        created.append(
            CellAnnotation.objects.create(
                field_id=cell.field_id,
                cell=cell,
                cell_label=cell.label,
                mask_digest=mask_digest(cell.mask_rle),
                kind=kind,
                classes=chosen,
                author=user,
                corrected_model=cell.classifier,
                corrected_model_name=cell.classifier.label if cell.classifier else cell.model_name,
                corrected_probabilities=cell.probabilities,
            )
        )
    return created


@transaction.atomic
def annotation_undo(
    *, user: AbstractBaseUser, annotation: CellAnnotation, version: int | None = None
) -> CellAnnotation:
    """Mark an annotation undone; the cell's previous annotation (if any) is current again."""
    Field.objects.select_for_update().filter(pk=annotation.field_id).exists()
    annotation.refresh_from_db()
    if annotation.undone_at is not None:
        raise ValidationError("This annotation was undone already.")
    if annotation.field.job.owner_id != user.pk:
        raise ValidationError("Only the owner of a job undoes its annotations.")
    if version is not None:
        now = cell_version(field_id=annotation.field_id, cell_label=annotation.cell_label)
        if now != version:
            raise AnnotationConflict(
                f"Cell {annotation.cell_label} of field {annotation.field.name} was annotated elsewhere since you "
                f"loaded it (version {now}, you had {version}); nothing was undone. Reload and try again."
            )
    annotation.undone_at = timezone.now()
    annotation.undone_by = user
    annotation.save(update_fields=["undone_at", "undone_by"])
    return annotation


def annotations_relink(*, field: Field) -> None:
    """After a field's cells were replaced: attach each annotation to the cell with its label and
    mask, detach the others (kept for when the fix is undone)."""
    cells = {cell.label: cell for cell in field.cells.all()}
    for annotation in CellAnnotation.objects.filter(field=field):
        cell = cells.get(annotation.cell_label)
        matching = cell if cell is not None and mask_digest(cell.mask_rle) == annotation.mask_digest else None
        if annotation.cell_id != (matching.pk if matching else None):
            annotation.cell = matching
            annotation.save(update_fields=["cell"])


def annotation_list(
    *, user: AbstractBaseUser, job: Job | None = None, field: Field | None = None, include_undone: bool = True
) -> QuerySet[CellAnnotation]:
    """The annotations of the user's jobs (of one job or field), newest first."""
    rows = CellAnnotation.objects.filter(field__job__owner=user).select_related(
        "field", "author", "undone_by", "corrected_model", "cell"
    )
    if job is not None:
        rows = rows.filter(field__job=job)
    if field is not None:
        rows = rows.filter(field=field)
    if not include_undone:
        rows = rows.filter(undone_at__isnull=True)
    return rows.order_by("-created_at", "-id")


def annotation_get(*, user: AbstractBaseUser, annotation_id: int) -> CellAnnotation:
    from django.shortcuts import get_object_or_404

    return get_object_or_404(annotation_list(user=user), pk=annotation_id)


def jobs_usable_for_training(*, user: AbstractBaseUser) -> QuerySet[Job]:
    """The jobs whose annotations and labels `user` may train on: their own, and those an administrator shared."""
    shared = JobShare.objects.filter(user=user).values_list("job_id", flat=True)
    return Job.objects.filter(Q(owner=user) | Q(pk__in=shared)).distinct()


@transaction.atomic
def job_share(*, job: Job, user: AbstractBaseUser, shared_by: AbstractBaseUser) -> JobShare:
    """Let `user` train on `job`'s annotations and labels; administrators only."""
    if not shared_by.is_staff:
        raise ValidationError("Only an administrator shares a job with other users.")
    share, _ = JobShare.objects.get_or_create(job=job, user=user, defaults={"shared_by": shared_by})
    return share


# CSV out and in.


def _annotation_row(annotation: CellAnnotation) -> tuple:
    probabilities = annotation.corrected_probabilities
    top = CLASS_NAMES[max(range(NUM_CLASSES), key=lambda i: probabilities[i])] if probabilities else ""
    return (
        annotation.field.name,
        annotation.cell_label,
        annotation.kind,
        "|".join(str(index) for index in annotation.classes),
        "|".join(CLASS_NAMES[index] for index in annotation.classes),
        annotation.author.username if annotation.author else "",
        annotation.created_at.isoformat(timespec="seconds"),
        annotation.corrected_model_name,
        top,
        annotation.undone_at.isoformat(timespec="seconds") if annotation.undone_at else "",
    )


def annotations_csv(*, user: AbstractBaseUser, job: Job) -> Iterator[str]:
    """Every annotation of the job, undone ones included (their `undone_at` set), oldest first."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(ANNOTATION_CSV_HEADER)
    for annotation in annotation_list(user=user, job=job).order_by("created_at", "id"):
        writer.writerow(_annotation_row(annotation))
    yield buffer.getvalue()


def _parse_classes(text: str, *, where: str) -> list[int]:
    chosen = set()
    names = {name.lower(): index for index, name in enumerate(CLASS_NAMES)}
    for part in (piece.strip() for piece in text.split("|")):
        if not part:
            continue
        if part.isdigit() and int(part) < NUM_CLASSES:
            chosen.add(int(part))
        elif part.lower() in names:
            chosen.add(names[part.lower()])
        else:
            raise ValidationError(
                f"{where}: {part!r} is not one of the 19 classes; use numbers 0 to 18 or class names joined by '|'."
            )
    return sorted(chosen)


@transaction.atomic
def annotations_import_csv(*, user: AbstractBaseUser, job: Job, data: bytes) -> list[CellAnnotation]:
    """Annotations from a CSV with the columns field, cell_id, classes (and optionally kind), as the
    export writes them; rows with an `undone_at` are skipped. Every row is checked before any is
    stored: an unknown field, cell or class refuses the whole file with a sentence."""
    if len(data) > MAX_IMPORT_BYTES:
        raise ValidationError("The annotations CSV is larger than 8 MiB; split it.")
    try:
        text = data.decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError:
        raise ValidationError("The annotations CSV is not UTF-8 text; save it as a plain CSV.") from None
    reader = csv.DictReader(io.StringIO(text))
    columns = [column.strip() for column in reader.fieldnames or ()]
    missing = [column for column in IMPORT_COLUMNS if column not in columns]
    if missing:
        raise ValidationError(
            f"The annotations CSV must have the columns field, cell_id and classes (kind optional); "
            f"{', '.join(missing)} missing. Start from an annotations export."
        )
    reader.fieldnames = columns
    cells = {
        (cell.field.name, cell.label): cell for cell in Cell.objects.filter(field__job=job).select_related("field")
    }
    planned: list[tuple[Cell, str, list[int]]] = []
    for line, record in enumerate(reader, start=2):
        if (record.get("undone_at") or "").strip():
            continue
        where = f"Line {line}"
        try:
            key = ((record.get("field") or "").strip(), int((record.get("cell_id") or "").strip()))
        except ValueError:
            raise ValidationError(f"{where}: cell_id must be a whole number, the cell's id in its field.") from None
        cell = cells.get(key)
        if cell is None:
            raise ValidationError(f"{where}: this job has no cell {key[1]} in a field named {key[0]!r}.")
        kind = (record.get("kind") or CellAnnotation.Kind.CLASSES).strip()
        chosen = _parse_classes(record.get("classes") or "", where=where)
        try:
            _check_call(kind, chosen)
        except ValidationError as error:
            raise ValidationError(f"{where}: {error.messages[0]}") from None
        planned.append((cell, kind, chosen))
    if not planned:
        raise ValidationError("The annotations CSV holds no annotation rows.")
    created = []
    for cell, kind, chosen in planned:
        created += annotations_create(user=user, calls=[CellCall(cell=cell)], kind=kind, classes=chosen)
    return created


def coco_annotated_entries(*, job: Job) -> Iterator[dict]:
    """The cells' current annotated classes as COCO annotations (score 1, `annotated`: true)."""
    rows = (
        CellAnnotation.objects.filter(field__job=job, undone_at__isnull=True, cell__isnull=False)
        .select_related("cell", "author")
        .order_by("cell_id", "created_at", "id")
    )
    current: dict[int, CellAnnotation] = {}
    for annotation in rows:
        current[annotation.cell_id] = annotation
    for annotation in current.values():
        cell = annotation.cell
        min_row, min_col, max_row, max_col = cell.bbox
        for class_index in annotation.classes:
            yield {
                "image_id": cell.field_id,
                "category_id": class_index + 1,
                "hpa_label": class_index,
                "segmentation": cell.mask_rle,
                "bbox": [min_col, min_row, max_col - min_col, max_row - min_row],
                "area": cell.area_px,
                "score": 1.0,
                "iscrowd": 0,
                "cell_id": cell.label,
                "annotated": True,
                "annotated_by": annotation.author.username if annotation.author else "",
                "annotated_at": annotation.created_at.isoformat(timespec="seconds"),
            }
