"""One field in, everything the product shows out: segmentation, cell masks as RLE, class probabilities."""

import time
from collections.abc import Callable
from dataclasses import dataclass

from ml.classifier.predictor import Predictor
from ml.crops import cell_boxes, crop_cells
from ml.encoding import empty_rle, labels_to_rles
from ml.io import FieldImages
from ml.segmentation import Segmentation, Segmenter

# Share of a field's work done when each stage starts; segmentation dominates on a CPU.
# `analyse_field` reports the first three; "saving" is for a caller that stores the result.
STAGE_START: dict[str, float] = {"segmenting": 0.0, "encoding": 0.6, "classifying": 0.7, "saving": 0.9}

Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class CellResult:
    cell_id: int
    bbox: tuple[int, int, int, int]  # min_row, min_col, max_row, max_col (half-open)
    area_px: int
    mask_rle: dict  # COCO compressed RLE of the whole field, counts as str
    nucleus_rle: dict
    probabilities: tuple[float, ...] | None  # 19 final (blended) probabilities; None without a model


@dataclass(frozen=True, eq=False)
class FieldResult:
    height: int
    width: int
    segmentation: Segmentation
    cells: tuple[CellResult, ...]
    image_probabilities: tuple[float, ...] | None  # 19, pooled over the cells; None without a model
    model_name: str | None
    timings_s: dict[str, float]  # segmentation, encoding, crops, classification


def analyse_field(
    field: FieldImages, *, segmenter: Segmenter, predictor: Predictor | None, progress: Progress | None = None
) -> FieldResult:
    """Segment a field, encode its cells and nuclei, and classify each cell when a predictor is given.

    `progress(stage, fraction)` is called as each stage starts ("segmenting", "encoding",
    "classifying") with the share of the field's work done so far, and once more with 1.0.
    """
    report = progress or _ignore_progress
    timings_s = {"segmentation": 0.0, "encoding": 0.0, "crops": 0.0, "classification": 0.0}
    height, width = field.shape

    report("segmenting", STAGE_START["segmenting"])
    started = time.perf_counter()
    segmentation = segmenter(field)
    timings_s["segmentation"] = time.perf_counter() - started
    if segmentation.cell_labels.shape != field.shape or segmentation.nuclei_labels.shape != field.shape:
        raise ValueError(
            f"The {segmentation.backend} segmentation returned labels of shape {segmentation.cell_labels.shape} "
            f"for a field of shape {field.shape}."
        )

    report("encoding", STAGE_START["encoding"])
    started = time.perf_counter()
    cell_rles = labels_to_rles(segmentation.cell_labels)
    nucleus_rles = labels_to_rles(segmentation.nuclei_labels)
    timings_s["encoding"] = time.perf_counter() - started

    stage = "encoding"
    cell_probabilities = image_probabilities = model_name = None
    if predictor is None:
        cell_ids, bboxes, areas_px = cell_boxes(segmentation.cell_labels)
    else:
        stage = "classifying"
        report(stage, STAGE_START[stage])
        started = time.perf_counter()
        crops = crop_cells(field.stack(), segmentation.cell_labels, size_px=predictor.input_size_px)
        timings_s["crops"] = time.perf_counter() - started
        started = time.perf_counter()
        _, pooled, blended = predictor.predict_cells(crops)
        timings_s["classification"] = time.perf_counter() - started
        cell_ids, bboxes, areas_px = crops.cell_ids, crops.bboxes, crops.areas_px
        cell_probabilities = [tuple(row.tolist()) for row in blended]
        image_probabilities = tuple(pooled.tolist())
        model_name = predictor.name

    cells = tuple(
        CellResult(
            cell_id=int(cell_id),
            bbox=tuple(int(side) for side in bbox),
            area_px=int(area_px),
            mask_rle=cell_rles[int(cell_id)],
            nucleus_rle=nucleus_rles.get(int(cell_id)) or empty_rle(height, width),
            probabilities=None if cell_probabilities is None else cell_probabilities[index],
        )
        for index, (cell_id, bbox, area_px) in enumerate(zip(cell_ids, bboxes, areas_px, strict=True))
    )
    report(stage, 1.0)
    return FieldResult(
        height=height,
        width=width,
        segmentation=segmentation,
        cells=cells,
        image_probabilities=image_probabilities,
        model_name=model_name,
        timings_s=timings_s,
    )


def _ignore_progress(stage: str, fraction: float) -> None:
    """Stands in when the caller wants no progress reports."""
