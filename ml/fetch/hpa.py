"""Downloading public HPA Cell Atlas fields listed in a labels table (`python -m ml fetch-hpa`).

The table is the one competitors of the 2021 challenge used to download extra data (the HPA's
public-data table): one row per field with its image URL base (`Image`, e.g.
`https://images.proteinatlas.org/10005/921_B9_1`), its labels (`Label`: class indices or class
names joined by `|`, or `Label_idx`), and its cell line (`Cellline`, optional). Each channel is
the file `{url}_{red,green,blue,yellow}.tif.gz` (16-bit TIFF, gzip) or its `.jpg` copy.

`fetch_fields` downloads every file on `jobs` threads, with retries and exponential back-off on
server errors, broken connections and files that do not decode; every file is decoded
(`ml.io.read_channel`) before it is kept, written beside its final name and renamed, so a rerun
skips what is there and fetches the rest. The folder gets the Kaggle layout
(`{ID}_{channel}.tif.gz`, ID = the URL's last two parts joined by `_`, e.g. `10005_921_B9_1`) and a
`train.csv` (`ID,Label,Cellline,Image`) of every complete field, which `python -m ml train` reads.
"""

import csv
import io
import os
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ml.constants import CHANNELS, CLASS_NAMES, NUM_CLASSES
from ml.io import InputError, read_channel

FORMATS = {"tif": ".tif.gz", "jpg": ".jpg"}
URL_COLUMNS = ("Image", "image", "Image_URL", "url", "URL")
LABEL_COLUMNS = ("Label", "Label_idx", "label", "labels")
CELL_LINE_COLUMNS = ("Cellline", "cell_line", "Cell line", "cellline")
_NAMES = {name.lower(): index for index, name in enumerate(CLASS_NAMES)}


@dataclass(frozen=True)
class PublicField:
    image_id: str
    url: str  # the URL base, without channel and suffix
    labels: tuple[int, ...]
    cell_line: str = ""


@dataclass
class FetchReport:
    fields: int = 0  # fields asked for
    complete: int = 0  # fields with all four files, after this run
    fetched: int = 0  # files downloaded by this run
    already_there: int = 0  # files found from an earlier run
    failures: Counter = field(default_factory=Counter)  # kind -> files
    examples: dict[str, str] = field(default_factory=dict)  # kind -> one file's sentence

    def sentences(self) -> list[str]:
        lines = [
            f"{self.complete} of {self.fields} field(s) complete; {self.fetched} file(s) downloaded, "
            f"{self.already_there} already there."
        ]
        for kind, count in sorted(self.failures.items()):
            lines.append(f"{count} file(s) {_KIND_TEXT[kind]}; for example {self.examples[kind]}")
        if self.failures:
            lines.append("Run the same command again to retry them; complete files are kept.")
        return lines


_KIND_TEXT = {
    "server": "failed with a server error on every attempt",
    "network": "could not be reached on every attempt (connection or timeout)",
    "corrupt": "were damaged (they did not decode as images) on every attempt",
    "missing": "do not exist on the server (404 or 403; not retried)",
}


def read_public_table(csv_path: Path) -> list[PublicField]:
    """The fields of an HPA public-data table; a sentence (`InputError`) for anything unusable."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise InputError(f"{csv_path} does not exist; pass the HPA public-data table (a CSV with Image and Label).")
    with open(csv_path, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        url_column = next((c for c in URL_COLUMNS if c in columns), None)
        label_column = next((c for c in LABEL_COLUMNS if c in columns), None)
        if url_column is None or label_column is None:
            raise InputError(
                f"{csv_path.name} must have an image URL column ({' or '.join(URL_COLUMNS)}) and a label column "
                f"({' or '.join(LABEL_COLUMNS)}); it has {', '.join(columns) or 'none'}."
            )
        cell_line_column = next((c for c in CELL_LINE_COLUMNS if c in columns), None)
        fields, seen = [], set()
        for line, row in enumerate(reader, start=2):
            url = (row[url_column] or "").strip().rstrip("/")
            if not url:
                continue
            if "://" not in url:
                url = "https://" + url
            image_id = (row.get("ID") or "").strip() or "_".join(url.split("/")[-2:])
            if image_id in seen:
                continue
            seen.add(image_id)
            labels = parse_labels(row[label_column] or "", where=f"{csv_path.name} line {line}")
            cell_line = (row.get(cell_line_column) or "").strip() if cell_line_column else ""
            fields.append(PublicField(image_id, url, labels, cell_line))
    return fields


def parse_labels(text: str, *, where: str) -> tuple[int, ...]:
    """Class indices from `0|16`, `Nucleoplasm|Cytosol` or `Nucleoplasm,Cytosol`."""
    parts = [p.strip() for p in text.replace(",", "|").replace(";", "|").split("|") if p.strip()]
    labels = set()
    for part in parts:
        if part.isdigit() and int(part) < NUM_CLASSES:
            labels.add(int(part))
        elif part.lower() in _NAMES:
            labels.add(_NAMES[part.lower()])
        else:
            raise InputError(f"{where}: {part!r} is neither a class index (0..18) nor one of the 19 class names.")
    if not labels:
        raise InputError(f"{where}: the field has no labels.")
    return tuple(sorted(labels))


def select_fields(
    fields: Sequence[PublicField], *, classes: Sequence[int] | None = None, per_class: int | None = None
) -> list[PublicField]:
    """The fields that have one of `classes` (all by default), at most about `per_class` per class:
    classes are filled from the rarest up, each taking fields (in table order) until `per_class`
    chosen fields show it, so rare classes are not crowded out by common ones."""
    wanted = set(range(NUM_CLASSES) if classes is None else classes)
    candidates = [f for f in fields if wanted & set(f.labels)]
    if per_class is None:
        return candidates
    counts = Counter(label for f in candidates for label in f.labels if label in wanted)
    chosen: dict[str, PublicField] = {}
    shown = Counter()
    for label in sorted(counts, key=lambda c: (counts[c], c)):
        for candidate in candidates:
            if shown[label] >= per_class:
                break
            if label in candidate.labels and candidate.image_id not in chosen:
                chosen[candidate.image_id] = candidate
                shown.update(candidate.labels)
    return [f for f in candidates if f.image_id in chosen]


def fetch_fields(
    fields: Sequence[PublicField],
    out: Path,
    *,
    jobs: int = 8,
    file_format: str = "tif",
    attempts: int = 4,
    backoff_s: float = 1.0,
    timeout_s: float = 60.0,
    progress: Callable[[int, int], None] | None = None,
) -> FetchReport:
    """Download the channel files of `fields` into `out` and write `out/train.csv`; see the module's docstring."""
    if file_format not in FORMATS:
        raise InputError(f"Unknown format {file_format!r}; choose one of {', '.join(FORMATS)}.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = FORMATS[file_format]
    report = FetchReport(fields=len(fields))
    tasks = [(f, channel) for f in fields for channel in CHANNELS]
    done = 0

    def fetch(task: tuple[PublicField, str]) -> tuple[str, str | None]:
        public, channel = task
        target = out / f"{public.image_id}_{channel}{suffix}"
        if target.is_file():
            return "there", None
        return _download(f"{public.url}_{channel}{suffix}", target, attempts, backoff_s, timeout_s)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for outcome, sentence in pool.map(fetch, tasks):
            if outcome == "there":
                report.already_there += 1
            elif outcome == "fetched":
                report.fetched += 1
            else:
                report.failures[outcome] += 1
                report.examples.setdefault(outcome, sentence)
            done += 1
            if progress is not None:
                progress(done, len(tasks))
    complete = [f for f in fields if all((out / f"{f.image_id}_{c}{suffix}").is_file() for c in CHANNELS)]
    report.complete = len(complete)
    _write_labels(out / "train.csv", complete)
    return report


def _download(url: str, target: Path, attempts: int, backoff_s: float, timeout_s: float) -> tuple[str, str | None]:
    """("fetched", None) or (failure kind, a sentence about the last attempt)."""
    kind, sentence = "network", ""
    for attempt in range(attempts):
        if attempt:
            time.sleep(backoff_s * 2 ** (attempt - 1))
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response, open(partial, "wb") as file:
                while chunk := response.read(1 << 20):
                    file.write(chunk)
            try:
                read_channel(io.BytesIO(partial.read_bytes()), channel=target.name)
            except InputError as error:
                kind, sentence = "corrupt", f"{url}: {error}"
                continue
            os.replace(partial, target)
            return "fetched", None
        except urllib.error.HTTPError as error:
            if error.code in (403, 404, 410):
                return "missing", f"{url} answered {error.code} {error.reason}."
            kind, sentence = "server", f"{url} answered {error.code} {error.reason}."
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as error:
            reason = getattr(error, "reason", None) or error
            kind, sentence = "network", f"{url} could not be fetched ({reason})."
        finally:
            partial.unlink(missing_ok=True)
    return kind, sentence


def _write_labels(path: Path, fields: Sequence[PublicField]) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    with open(temporary, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ID", "Label", "Cellline", "Image"])
        for public in sorted(fields, key=lambda f: f.image_id):
            writer.writerow([public.image_id, "|".join(map(str, public.labels)), public.cell_line, public.url])
    os.replace(temporary, path)
