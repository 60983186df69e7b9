"""One field in, everything the product shows out: segmentation, cell masks as RLE, class probabilities."""

import contextlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import torch

from ml.classifier.base import CellClassifierModel, ModelDescription
from ml.crops import cell_boxes, crop_cells, field_planes
from ml.encoding import empty_rle, labels_to_rles
from ml.io import FieldImages, normalise_range
from ml.measure import CellMeasurements, measure_cells
from ml.pictures import EncodedPictures, FieldPictures
from ml.qc import QcThresholds, qc_flags
from ml.segmentation import Segmentation, Segmenter
from ml.viewer import ViewerImages

# Share of a field's work done when each stage starts; segmentation dominates on a CPU.
# `analyse_field` reports the first three; "saving" is for a caller that stores the result.
STAGE_START: dict[str, float] = {"segmenting": 0.0, "encoding": 0.6, "classifying": 0.7, "saving": 0.9}

Progress = Callable[[str, float], None]

# PyTorch's OpenMP threads wait for one another at every barrier of the network by spinning. Beside the
# measurement and picture threads they spin for cores those threads hold: on two cores a 2048 px field's
# crops and classification took 0.41 s on torch's two threads and 0.28 s on one, and the field 1.72 s
# of CPU instead of 1.64 (medians of 32 fields, `python -m bench.threads`). So while those threads run,
# crops and classification on the CPU use this many threads (0: torch's own count).
CPU_THREADS_BESIDE_OTHERS = 1


@dataclass(frozen=True)
class CellResult:
    cell_id: int
    bbox: tuple[int, int, int, int]  # min_row, min_col, max_row, max_col (half-open)
    area_px: int
    mask_rle: dict  # COCO compressed RLE of the whole field, counts as str
    nucleus_rle: dict
    probabilities: tuple[float, ...] | None  # 19 final (blended) probabilities; None without a model
    familiarity: float | None = None  # how like the model's training cells; None where the model cannot say
    unfamiliar: bool | None = None  # familiarity below the model's threshold
    measurements: dict[str, float | None] | None = None  # `ml.measure` by name (None: NaN); None when not measured
    qc_flags: tuple[str, ...] = ()  # `ml.qc.QC_FLAGS` that apply; empty also when not measured


@dataclass(frozen=True)
class MeasureOptions:
    """What `analyse_field` measures per cell: shape and intensity always, textures and scattering
    as chosen, and the quality-control flags with `qc` thresholds (None: no flags)."""

    texture: bool = True
    scattering: bool = False
    qc: QcThresholds | None = QcThresholds()


@dataclass(frozen=True, eq=False)
class FieldResult:
    height: int
    width: int
    segmentation: Segmentation
    cells: tuple[CellResult, ...]
    image_probabilities: tuple[float, ...] | None  # 19, pooled over the cells; None without a model
    model: ModelDescription | None  # the classifier that made the probabilities
    timings_s: dict[str, float]  # segmentation, encoding, crops, classification (measurements, viewer)
    viewer: ViewerImages | None = None  # the viewer's pictures, when asked for
    pictures: EncodedPictures | None = None  # and every picture the field stores, encoded

    @property
    def model_name(self) -> str | None:
        return self.model.name if self.model is not None else None

    @property
    def unfamiliar_share(self) -> float | None:
        """The share of the field's cells flagged unfamiliar; None where the model cannot say."""
        flags = [cell.unfamiliar for cell in self.cells]
        if not flags or any(flag is None for flag in flags):
            return None
        return sum(flags) / len(flags)


def _start_measuring(
    field: FieldImages, segmentation: Segmentation, measure: MeasureOptions
) -> Future[CellMeasurements]:
    """Measure the cells in a thread of their own while the caller encodes, crops and classifies them.
    The measurements hold the GIL for most of their work (many small NumPy and SciPy calls per cell), so
    they overlap the GIL-free parts beside them (Pillow, PyTorch, large NumPy arrays) and are the
    field's longest path after segmentation (README, Performance)."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="measure")
    future = pool.submit(
        measure_cells,
        field,
        segmentation.cell_labels,
        segmentation.nuclei_labels,
        texture=measure.texture,
        scattering=measure.scattering,
    )
    pool.shutdown(wait=False)  # the thread ends with its one task
    return future


@contextlib.contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    """PyTorch's CPU threads limited to `count` inside the block (0, or more than it has: left as they are).
    Its thread count is the process's: one field is analysed at a time in a worker process."""
    before = torch.get_num_threads()
    if count <= 0 or count >= before:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def analyse_field(
    field: FieldImages,
    *,
    segmenter: Segmenter,
    predictor: CellClassifierModel | None,
    progress: Progress | None = None,
    measure: MeasureOptions | None = None,
    viewer: bool = False,
) -> FieldResult:
    """Segment a field, encode its cells and nuclei, classify each cell when a predictor is given, and
    measure each cell and flag it for quality control when `measure` is given (in a thread, alongside
    encoding, crops and classification; "measurements" times what is left of it after them).

    With `viewer`, the viewer's pictures and every picture the field stores are made and encoded
    on threads beside the rest (`ml.pictures.FieldPictures`, from the decoded field on); "viewer"
    times the wait for them at the end.

    `progress(stage, fraction)` is called as each stage starts ("segmenting", "encoding",
    "classifying") with the share of the field's work done so far, and once more with 1.0.
    """
    pictures = FieldPictures(field) if viewer else None
    try:
        return _analyse_field(
            field, segmenter=segmenter, predictor=predictor, progress=progress, measure=measure, pictures=pictures
        )
    finally:
        if pictures is not None:
            pictures.close()  # a no-op once the pictures are in; otherwise the failed field's are dropped


def _analyse_field(
    field: FieldImages,
    *,
    segmenter: Segmenter,
    predictor: CellClassifierModel | None,
    progress: Progress | None,
    measure: MeasureOptions | None,
    pictures: FieldPictures | None,
) -> FieldResult:
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

    measuring = _start_measuring(field, segmentation, measure) if measure is not None else None
    if pictures is not None:
        pictures.segmented(segmentation)
    report("encoding", STAGE_START["encoding"])
    started = time.perf_counter()
    cell_rles = labels_to_rles(segmentation.cell_labels)
    nucleus_rles = labels_to_rles(segmentation.nuclei_labels)
    timings_s["encoding"] = time.perf_counter() - started

    stage = "encoding"
    cell_probabilities = image_probabilities = model = familiarity = unfamiliar = None
    if predictor is None:
        cell_ids, bboxes, areas_px = cell_boxes(segmentation.cell_labels)
        if pictures is not None:
            pictures.cells(cell_ids=cell_ids, bboxes=bboxes)
    else:
        stage = "classifying"
        report(stage, STAGE_START[stage])
        beside = measuring is not None or pictures is not None
        with _torch_threads(CPU_THREADS_BESIDE_OTHERS if beside else 0):
            started = time.perf_counter()
            # Dim channels stretched over their own range, so the classifier sees them as it sees bright ones.
            planes = field_planes(normalise_range(field))  # the channels as they are, not copied into one stack
            crops = crop_cells(planes, segmentation.cell_labels, size_px=predictor.input_size_px)
            timings_s["crops"] = time.perf_counter() - started
            cell_ids, bboxes, areas_px = crops.cell_ids, crops.bboxes, crops.areas_px
            if pictures is not None:  # before classifying, so the thumbnails are drawn beside it
                pictures.cells(cell_ids=cell_ids, bboxes=bboxes)
            started = time.perf_counter()
            predictions = predictor.predict_cells(crops)
            timings_s["classification"] = time.perf_counter() - started
        cell_probabilities = [tuple(row.tolist()) for row in predictions.final_probabilities]
        image_probabilities = tuple(predictions.image_probabilities.tolist())
        if predictions.familiarity is not None:
            familiarity = predictions.familiarity.tolist()
            unfamiliar = predictions.unfamiliar.tolist()
        model = predictor.description

    measured: list[dict | None] = [None] * len(cell_ids)
    flags: list[tuple[str, ...]] = [()] * len(cell_ids)
    if measuring is not None:
        started = time.perf_counter()
        measurements = measuring.result()  # its own error, if it raised one
        measured = [measurements.row_dict(index) for index in range(len(measurements))]
        if measure.qc is not None:
            flags = qc_flags(measurements, measure.qc)
        timings_s["measurements"] = time.perf_counter() - started  # the part not hidden behind the stages above

    viewer_images = encoded = None
    if pictures is not None:
        started = time.perf_counter()
        viewer_images, encoded = pictures.result()
        timings_s["viewer"] = time.perf_counter() - started  # the part not hidden behind the stages above

    cells = tuple(
        CellResult(
            cell_id=int(cell_id),
            bbox=tuple(int(side) for side in bbox),
            area_px=int(area_px),
            mask_rle=cell_rles[int(cell_id)],
            nucleus_rle=nucleus_rles.get(int(cell_id)) or empty_rle(height, width),
            probabilities=None if cell_probabilities is None else cell_probabilities[index],
            familiarity=None if familiarity is None else familiarity[index],
            unfamiliar=None if unfamiliar is None else unfamiliar[index],
            measurements=measured[index],
            qc_flags=flags[index],
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
        model=model,
        timings_s=timings_s,
        viewer=viewer_images,
        pictures=encoded,
    )


def _ignore_progress(stage: str, fraction: float) -> None:
    """Stands in when the caller wants no progress reports."""
