"""Mask encodings: COCO compressed RLE and the Kaggle HPA submission format.

The Kaggle mask string is the COCO compressed RLE of an (H, W) mask, compressed with zlib at
level 9 and written as base64 text. RLE dicts here keep `counts` as `str` so they are JSON-able.
"""

import base64
import binascii
import csv
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
from pycocotools import mask as coco_mask
from scipy import ndimage

from ml.constants import NUM_CLASSES

SUBMISSION_COLUMNS: tuple[str, ...] = ("ID", "ImageWidth", "ImageHeight", "PredictionString")


def encode_rle(mask: np.ndarray) -> dict:
    """bool (H, W) -> {"size": [H, W], "counts": str} (COCO compressed RLE)."""
    if mask.ndim != 2:
        raise ValueError(f"A mask must be 2-D (H, W), got shape {mask.shape}.")
    # pycocotools reads column-major (H, W, N) uint8 and refuses C order.
    fortran = np.asfortranarray(mask.astype(np.uint8, copy=False)[:, :, None])
    rle = coco_mask.encode(fortran)[0]
    return {"size": [int(side) for side in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict) -> np.ndarray:
    """COCO compressed RLE (counts as str or bytes) -> bool (H, W)."""
    counts = rle["counts"]
    coco_rle = {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return coco_mask.decode(coco_rle).astype(bool)


def labels_to_rles(labels: np.ndarray) -> dict[int, dict]:
    """One RLE per nonzero label of an (H, W) label image, equal to `encode_rle(labels == label)`.

    Each label's run lengths are computed from its bounding box only, then turned into the
    full-image RLE; encoding a full-size mask per label would scan H x W pixels every time.
    """
    if labels.ndim != 2:
        raise ValueError(f"A label image must be 2-D (H, W), got shape {labels.shape}.")
    height, width = labels.shape
    rles = {}
    for index, box in enumerate(ndimage.find_objects(labels)):
        if box is None:
            continue
        label = index + 1
        rows, cols = box
        counts = _bbox_run_lengths(labels[box] == label, top=rows.start, left=cols.start, height=height, width=width)
        rle = coco_mask.frPyObjects({"size": [height, width], "counts": counts}, height, width)
        rles[label] = {"size": [height, width], "counts": rle["counts"].decode("ascii")}
    return rles


def empty_rle(height: int, width: int) -> dict:
    """The RLE of an all-background (H, W) mask."""
    rle = coco_mask.frPyObjects({"size": [height, width], "counts": [height * width]}, height, width)
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}


def _bbox_run_lengths(box_mask: np.ndarray, *, top: int, left: int, height: int, width: int) -> list[int]:
    """Column-major run lengths (starting with background) of a full (H, W) mask from its box crop."""
    box_height = box_mask.shape[0]
    # A background row above and below each box column makes every column start and end on
    # background, so each change of value in the padded column-major sequence is one run boundary.
    padded = np.zeros((box_height + 2, box_mask.shape[1]), dtype=bool)
    padded[1:-1] = box_mask
    sequence = padded.ravel(order="F")
    changes = np.flatnonzero(sequence[1:] != sequence[:-1]) + 1
    column, row = np.divmod(changes, box_height + 2)
    boundaries = (left + column) * height + (top - 1 + row)  # index in the full column-major mask
    # A box spanning the full height maps "run ends at the bottom" and "run restarts at the top
    # of the next column" to one index: that pair is no boundary. Neither is the end of the image.
    boundaries, occurrences = np.unique(boundaries, return_counts=True)
    boundaries = boundaries[(occurrences == 1) & (boundaries < height * width)]
    edges = np.concatenate(([0], boundaries, [height * width]))
    return np.diff(edges).tolist()


def rle_to_kaggle(rle: dict) -> str:
    """COCO compressed RLE -> Kaggle mask string (zlib level 9, base64 text)."""
    counts = rle["counts"]
    counts = counts.encode("ascii") if isinstance(counts, str) else counts
    return base64.b64encode(zlib.compress(counts, 9)).decode("ascii")


def kaggle_to_rle(text: str, *, height: int, width: int) -> dict:
    """Kaggle mask string -> COCO compressed RLE of an (H, W) mask."""
    try:
        counts = zlib.decompress(base64.b64decode(text, validate=True))
    except (binascii.Error, zlib.error):
        raise ValueError(
            f"{text[:20]!r}... is not a Kaggle mask string (base64 of zlib-compressed COCO RLE counts)."
        ) from None
    return {"size": [height, width], "counts": counts.decode("ascii")}


def encode_kaggle_mask(mask: np.ndarray) -> str:
    """bool (H, W) -> Kaggle mask string."""
    return rle_to_kaggle(encode_rle(mask))


def decode_kaggle_mask(text: str, *, height: int, width: int) -> np.ndarray:
    """Kaggle mask string -> bool (H, W); height and width come from the submission row."""
    return decode_rle(kaggle_to_rle(text, height=height, width=width))


@dataclass(frozen=True)
class SubmissionRow:
    image_id: str
    width: int
    height: int
    prediction_string: str


def prediction_string(cells: Iterable[tuple[str, Sequence[float]]], *, min_confidence: float = 0.0) -> str:
    """(Kaggle mask string, 19 class probabilities) per cell -> "label confidence mask ..." triples.

    Every class whose probability is at least `min_confidence` gets a triple, in class order.
    """
    triples = []
    for mask_text, probabilities in cells:
        if len(probabilities) != NUM_CLASSES:
            raise ValueError(f"Each cell needs {NUM_CLASSES} class probabilities, got {len(probabilities)}.")
        for label, confidence in enumerate(probabilities):
            if confidence >= min_confidence:
                triples.append(f"{label} {float(confidence):.6g} {mask_text}")
    return " ".join(triples)


def parse_prediction_string(text: str) -> list[tuple[int, float, str]]:
    """ "label confidence mask ..." -> [(label, confidence, mask string), ...]."""
    tokens = text.split()
    if len(tokens) % 3:
        raise ValueError(f"A PredictionString holds 'label confidence mask' triples, but it has {len(tokens)} items.")
    try:
        return [(int(tokens[index]), float(tokens[index + 1]), tokens[index + 2]) for index in range(0, len(tokens), 3)]
    except ValueError:
        raise ValueError(
            "A PredictionString triple must start with an integer label and a numeric confidence."
        ) from None


def write_submission(path_or_file: str | Path | TextIO, rows: Iterable[SubmissionRow]) -> None:
    """Write a Kaggle submission CSV (`ID,ImageWidth,ImageHeight,PredictionString`)."""
    if isinstance(path_or_file, (str, Path)):
        with open(path_or_file, "w", newline="", encoding="utf-8") as file:
            _write_rows(file, rows)
    else:
        _write_rows(path_or_file, rows)


def _write_rows(file: TextIO, rows: Iterable[SubmissionRow]) -> None:
    writer = csv.writer(file, lineterminator="\n")
    writer.writerow(SUBMISSION_COLUMNS)
    for row in rows:
        writer.writerow((row.image_id, row.width, row.height, row.prediction_string))


def read_submission(path_or_file: str | Path | TextIO) -> list[SubmissionRow]:
    """Read a submission (or solution) CSV written in the Kaggle format."""
    if isinstance(path_or_file, (str, Path)):
        with open(path_or_file, newline="", encoding="utf-8") as file:
            return _read_rows(file, name=Path(path_or_file).name)
    return _read_rows(path_or_file, name=getattr(path_or_file, "name", "the submission"))


def _read_rows(file: TextIO, *, name: str) -> list[SubmissionRow]:
    # A PredictionString of a crowded field (19 triples per cell) far exceeds csv's 128 KiB default.
    csv.field_size_limit(2**31 - 1)
    reader = csv.DictReader(file)
    missing = [column for column in SUBMISSION_COLUMNS if column not in (reader.fieldnames or ())]
    if missing:
        raise ValueError(
            f"{name} lacks the column(s) {', '.join(missing)}; its header must be {','.join(SUBMISSION_COLUMNS)}."
        )
    rows = []
    for line_number, record in enumerate(reader, start=2):
        try:
            width, height = int(record["ImageWidth"]), int(record["ImageHeight"])
        except (TypeError, ValueError):
            raise ValueError(f"{name} line {line_number}: ImageWidth and ImageHeight must be integers.") from None
        rows.append(SubmissionRow(record["ID"], width, height, record["PredictionString"] or ""))
    return rows
