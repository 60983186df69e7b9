"""Image-level labels of a job's fields, from wherever the upload carries them.

Four ways in, combinable: a `train.csv` (or any CSV with the columns `ID,Label`) inside a zip of
fields, a CSV uploaded beside the files (in `files` or as `labels_file`), lines typed on the
upload form and the API's `labels` field (`ID,Label` per line, the header optional). A label is a
class number 0..18 or a class name; several are joined by `|`, as in the Kaggle `train.csv`.

Every problem (wrong columns, an unknown class, an ID no uploaded field has, two sources that
disagree) is a `JobInputError` under the key "labels" with a sentence; nothing is stored then.
"""

import csv
import io
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import PurePosixPath

from django.core.files import File
from django.utils.datastructures import MultiValueDict

from cells.uploads import JobInputError
from ml.archives import entry_hazard
from ml.constants import CLASS_NAMES, NUM_CLASSES

# A labels CSV is text of one line per field; more than this is not a labels file.
MAX_LABELS_CSV_BYTES = 16 * 1024 * 1024
_NAMES = {name.lower(): index for index, name in enumerate(CLASS_NAMES)}

Labels = dict[str, tuple[int, ...]]


def _refuse(sentence: str) -> JobInputError:
    return JobInputError({"labels": sentence})


def parse_label_value(text: str, *, where: str) -> tuple[int, ...]:
    """`8|5|0` or `Nucleoplasm|Golgi apparatus` -> sorted class indices; refuses unknown classes."""
    classes = set()
    for part in (piece.strip() for piece in text.split("|")):
        if not part:
            continue
        if part.isdigit() and int(part) < NUM_CLASSES:
            classes.add(int(part))
        elif part.lower() in _NAMES:
            classes.add(_NAMES[part.lower()])
        else:
            raise _refuse(
                f"{where}: {part!r} is not one of the 19 classes; use a number 0 to {NUM_CLASSES - 1} "
                "or a class name such as Nucleoplasm, joined by '|'."
            )
    if not classes:
        raise _refuse(f"{where}: the field has no label; give at least one class, or leave the field out.")
    return tuple(sorted(classes))


def parse_labels_csv(text: str, *, source: str) -> Labels:
    """A CSV with the columns ID and Label (others are ignored) -> {ID: classes}."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    columns = [column.strip() for column in reader.fieldnames or ()]
    if "ID" not in columns or "Label" not in columns:
        found = ", ".join(columns) if columns else "no columns"
        raise _refuse(
            f"{source} must have the columns ID,Label (found {found}); write one row per field, e.g. plate1-A3,0|16."
        )
    reader.fieldnames = columns
    labels: Labels = {}
    for line_number, record in enumerate(reader, start=2):
        image_id = (record.get("ID") or "").strip()
        if not image_id:
            raise _refuse(f"{source} line {line_number} has no ID; every row names a field.")
        if image_id in labels:
            raise _refuse(f"{source} names {image_id} twice (line {line_number}); give each field one row.")
        labels[image_id] = parse_label_value(record.get("Label") or "", where=f"{source} line {line_number}")
    return labels


def parse_typed_labels(text: str) -> Labels:
    """Lines typed on the form or sent as the API's `labels`: `ID,Label` each, an `ID,Label` header optional."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return {}
    if [part.strip() for part in lines[0].split(",")][:2] != ["ID", "Label"]:
        lines.insert(0, "ID,Label")
    return parse_labels_csv("\n".join(lines), source="The typed labels")


def _read_text(handle, *, source: str) -> str:
    data = handle.read(MAX_LABELS_CSV_BYTES + 1)
    if len(data) > MAX_LABELS_CSV_BYTES:
        raise _refuse(
            f"{source} is larger than {MAX_LABELS_CSV_BYTES // 1024**2} MiB; a labels CSV has one line per field."
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _refuse(f"{source} is not UTF-8 text; save it as a plain CSV (UTF-8).") from None


def _zip_label_csvs(upload: File) -> Iterable[tuple[str, str]]:
    """(source, text) of each labels CSV in a zip: `train.csv`, or any CSV whose header names ID and Label.

    The zip has been checked by `cells.uploads` already (entries, sizes, hazards)."""
    upload.seek(0)
    try:
        archive = zipfile.ZipFile(upload)
    except (zipfile.BadZipFile, OSError):
        return
    with archive:
        for entry in archive.infolist():
            parts = PurePosixPath(entry.filename.replace("\\", "/")).parts
            if entry.is_dir() or not parts or "__MACOSX" in parts or parts[-1].startswith("."):
                continue
            if not parts[-1].lower().endswith(".csv") or entry_hazard(entry) is not None:
                continue
            source = f"{parts[-1]} in {PurePosixPath(upload.name or 'the zip').name}"
            with archive.open(entry) as handle:
                text = _read_text(handle, source=source)
            header = text.lstrip("\ufeff").split("\n", 1)[0]
            if parts[-1].lower() == "train.csv" or {"ID", "Label"} <= {column.strip() for column in header.split(",")}:
                yield source, text
    upload.seek(0)


def labels_from_request(files: MultiValueDict, *, typed: str = "") -> Labels:
    """Every field's labels the request carries (see the module doc); {} when it carries none.

    Two sources giving one field different labels are refused with a sentence naming both."""
    found: list[tuple[str, Labels]] = []
    for upload in files.getlist("files"):
        name = PurePosixPath((upload.name or "").replace("\\", "/")).name
        if name.lower().endswith(".zip"):
            found += [(source, parse_labels_csv(text, source=source)) for source, text in _zip_label_csvs(upload)]
        elif name.lower().endswith(".csv"):
            upload.seek(0)
            found.append((name, parse_labels_csv(_read_text(upload, source=name), source=name)))
    for upload in files.getlist("labels_file"):
        name = PurePosixPath((upload.name or "labels.csv").replace("\\", "/")).name
        upload.seek(0)
        found.append((name, parse_labels_csv(_read_text(upload, source=name), source=name)))
    if typed.strip():
        found.append(("the typed labels", parse_typed_labels(typed)))
    merged: Labels = {}
    origin: dict[str, str] = {}
    for source, labels in found:
        for image_id, classes in labels.items():
            if image_id in merged and merged[image_id] != classes:
                raise _refuse(
                    f"{origin[image_id]} and {source} give field {image_id} different labels "
                    f"({'|'.join(map(str, merged[image_id]))} and {'|'.join(map(str, classes))}); keep one of them."
                )
            merged[image_id] = classes
            origin.setdefault(image_id, source)
    return merged


def check_labels_match_fields(labels: Mapping[str, tuple[int, ...]], field_names: Iterable[str]) -> None:
    """Refuse labels that name a field the upload does not hold."""
    names = set(field_names)
    unknown = sorted(set(labels) - names)
    if unknown:
        shown = ", ".join(unknown[:3]) + (f" and {len(unknown) - 3} more" if len(unknown) > 3 else "")
        raise _refuse(
            f"The labels name {len(unknown)} field(s) this upload does not hold ({shown}); "
            "correct the IDs to match the uploaded fields, or leave those rows out."
        )


def label_text(classes: Iterable[int]) -> str:
    return "|".join(str(index) for index in classes)
