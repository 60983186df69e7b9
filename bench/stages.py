"""Per-stage times of one worker processing synthetic fields, the classifier's throughput and the decode floor.

Each field goes through the calls `cells.processing.field_process` makes, in its order, timed one
by one: decode (`ml.io.read_field`), `ml.pipeline.analyse_field` (segmentation, mask encoding,
crops and classification, with progress written to the database; the measurements run in a thread
beside encoding, crops and classification, and the pictures the field stores are made and encoded
on another from the decoded field on; their rows are the waits for them after those), and
`field_store_result` (cell rows and files) on a throwaway SQLite database.
The decode floor is Pillow alone decoding the field's four PNGs, measured just before each field
so that both see the same load on a shared machine.

Two throughput measurements follow: the classifier alone on the run's crops, and the analysis
(decode to class probabilities) with fields spread over worker processes and the crops of
several fields classified in one batch. With CUDA, both also run on the GPU with bfloat16
autocast and channels-last inputs.
"""

import concurrent.futures
import multiprocessing
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import summary

# Rows of the table, in pipeline order; "other" is what end to end holds beyond the stages
# (progress updates, assembling the result).
STAGES: tuple[str, ...] = (
    "decode", "segmentation", "encoding", "crops", "classification", "measurements", "viewer", "database_write",
    "other",
)  # fmt: skip
STAGE_NAMES = {
    "decode_floor": "decode floor (Pillow, 4 PNGs)",
    "decode": "decode (ml.io.read_field)",
    "segmentation": "segmentation",
    "encoding": "mask encoding (cells and nuclei)",
    "crops": "crops",
    "classification": "classification",
    "measurements": "measurements and quality control (no scattering), beyond the stages they run beside",
    "viewer": "viewer images, thumbnails and label PNGs, beyond the stages they run beside",
    "database_write": "database write (rows and files)",
    "other": "other (progress, result assembly)",
    "end_to_end": "end to end",
}
CLASSIFIER_REPEATS = 3
MIN_CLASSIFIER_CELLS = 256  # the run's crops are repeated up to this many, so one batch is measured at least
GPU_CLASSIFIER_CELLS = 16384
GPU_BATCH_SIZE = 1024


@dataclass(frozen=True)
class FieldTimings:
    field_id: str
    cells: int
    seconds: dict[str, float]  # decode_floor, every name in STAGES, end_to_end


def decode_floor_s(channel_files: dict[str, Path]) -> float:
    """Seconds for Pillow to decode the field's channel files to arrays, nothing else."""
    started = time.perf_counter()
    for path in channel_files.values():
        with Image.open(path) as image:
            np.asarray(image)
    return time.perf_counter() - started


def time_fields(
    field_files: Sequence[dict[str, Path]], *, segmenter, predictor, measure=None
) -> tuple[list[FieldTimings], np.ndarray]:
    """Process each field as a worker does, timing every stage; also returns the crops made on the way.

    Django must be set up (`bench.configure_django`). The first field is processed once untimed
    first, so that lazy imports, thread pools and the database connection are not charged to it.
    """
    from django.contrib.auth import get_user_model

    from cells.models import Field, Job
    from cells.processing import field_set_progress, field_store_result
    from ml.crops import crop_cells
    from ml.io import read_field
    from ml.pipeline import analyse_field

    owner, _ = get_user_model().objects.get_or_create(username="bench")
    job = Job.objects.create(owner=owner, name="bench", segmentation_backend=segmenter.backend)

    def process(channel_files: dict[str, Path], name: str) -> tuple[dict[str, float], object, object]:
        seconds: dict[str, float] = {}
        started = time.perf_counter()
        images = read_field(channel_files)
        seconds["decode"] = time.perf_counter() - started
        height, width = images.shape
        field = Field.objects.create(job=job, name=name, width=width, height=height, bit_depth=images.bit_depth)

        def report(stage: str, fraction: float) -> None:
            field_set_progress(field_id=field.pk, status=Field.Status.SEGMENTING, progress=fraction)

        result = analyse_field(
            images, segmenter=segmenter, predictor=predictor, progress=report, measure=measure, viewer=True
        )
        seconds.update(result.timings_s)
        seconds.setdefault("measurements", 0.0)
        step = time.perf_counter()
        field_store_result(field=field, result=result)
        seconds["database_write"] = time.perf_counter() - step
        seconds["end_to_end"] = time.perf_counter() - started
        seconds["other"] = max(0.0, seconds["end_to_end"] - sum(seconds[name] for name in STAGES if name != "other"))
        return seconds, images, result

    process(field_files[0], "warm-up")
    timings, crops = [], []
    for index, channel_files in enumerate(field_files):
        field_id = Path(channel_files["green"]).name.rsplit("_", 1)[0]
        for path in channel_files.values():
            path.read_bytes()  # from the page cache for both the floor and the decode stage
        floor_s = decode_floor_s(channel_files)
        seconds, images, result = process(channel_files, f"{index}-{field_id}")
        timings.append(
            FieldTimings(field_id=field_id, cells=len(result.cells), seconds={"decode_floor": floor_s, **seconds})
        )
        if predictor is not None:
            crops.append(
                crop_cells(images.stack(), result.segmentation.cell_labels, size_px=predictor.input_size_px).images
            )
        del images, result  # one field's channels at a time, as in a worker
    size_px = predictor.input_size_px if predictor is not None else 0
    return timings, np.concatenate(crops) if crops else np.zeros((0, 4, size_px, size_px), np.float32)


def classifier_cells_per_s(predictor, crops: np.ndarray, *, min_cells: int = MIN_CLASSIFIER_CELLS) -> dict:
    """Cells per second of `predictor.predict_crops` on the run's crops (median of a few repeats)."""
    if len(crops) == 0:
        return {"cells": 0, "cells_per_s": None, "batch_size": predictor.batch_size}
    if len(crops) < min_cells:
        crops = np.concatenate([crops] * -(-min_cells // len(crops)))
    predictor.predict_crops(crops[: predictor.batch_size])  # warm-up
    durations_s = []
    for _ in range(CLASSIFIER_REPEATS):
        started = time.perf_counter()
        predictor.predict_crops(crops)
        _synchronize(predictor.device)
        durations_s.append(time.perf_counter() - started)
    median_s = summary(durations_s)["median"]
    return {
        "cells": len(crops),
        "batch_size": predictor.batch_size,
        "device": str(predictor.device),
        "median_s": median_s,
        "cells_per_s": len(crops) / median_s,
    }


def gpu_predictor(model_path: Path, *, batch_size: int = GPU_BATCH_SIZE):
    """The classifier on CUDA with bfloat16 autocast (channels-last comes with `Predictor`)."""
    import torch

    from ml.classifier.predictor import Predictor

    # Predictor autocasts on CUDA to the device's autocast dtype; bfloat16 keeps float32's range.
    torch.set_autocast_dtype("cuda", torch.bfloat16)
    torch.backends.cudnn.benchmark = True  # one input size throughout: let cuDNN pick its fastest kernels
    return Predictor.from_checkpoint(model_path, device="cuda", batch_size=batch_size)


def parallel_fields_per_s(
    field_files: Sequence[dict[str, Path]], *, predictor, processes: int, batch_cells: int, backend: str = "classical"
) -> dict:
    """Fields per second from decode to class probabilities, with `processes` worker processes
    decoding, segmenting, encoding and cropping fields while this process classifies the crops of
    several fields in one batch of at least `batch_cells`.

    Image pooling and blending (a few arithmetic operations per cell) are left out.
    """
    context = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads or CUDA
    with concurrent.futures.ProcessPoolExecutor(
        processes, mp_context=context, initializer=_init_analysis_process, initargs=(backend,)
    ) as pool:
        list(pool.map(_ready, range(processes)))  # start and import everything before the clock starts
        started = time.perf_counter()
        pending_crops, cells, classify_s = [], 0, 0.0
        size_px = predictor.input_size_px
        futures = [pool.submit(_analyse_without_classifier, files, size_px) for files in field_files]
        for done_count, future in enumerate(concurrent.futures.as_completed(futures), start=1):
            pending_crops.append(future.result())
            waiting = sum(len(crops) for crops in pending_crops)
            if waiting >= batch_cells or done_count == len(futures):
                step = time.perf_counter()
                if waiting:
                    predictor.predict_crops(np.concatenate(pending_crops))
                    _synchronize(predictor.device)
                classify_s += time.perf_counter() - step
                cells += waiting
                pending_crops = []
        elapsed_s = time.perf_counter() - started
    return {
        "fields": len(field_files),
        "cells": cells,
        "processes": processes,
        "batch_cells": batch_cells,
        "device": str(predictor.device),
        "seconds": elapsed_s,
        "classification_s": classify_s,
        "fields_per_s": len(field_files) / elapsed_s,
    }


_segmenter = None


def _init_analysis_process(backend: str) -> None:
    import torch

    from ml.segmentation import Segmenter

    global _segmenter
    torch.set_num_threads(1)  # the processes share the cores; one thread each
    _segmenter = Segmenter(backend)


def _ready(_: int) -> int:
    time.sleep(0.2)  # long enough for every process to take one
    return os.getpid()


def _analyse_without_classifier(channel_files: dict[str, Path], size_px: int) -> np.ndarray:
    from ml.crops import crop_cells
    from ml.encoding import labels_to_rles
    from ml.io import read_field

    field = read_field(channel_files)
    segmentation = _segmenter(field)
    labels_to_rles(segmentation.cell_labels)
    labels_to_rles(segmentation.nuclei_labels)
    return crop_cells(field.stack(), segmentation.cell_labels, size_px=size_px).images


def _synchronize(device) -> None:
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def stage_summaries(timings: Sequence[FieldTimings]) -> dict[str, dict[str, float]]:
    names = ("decode_floor", *STAGES, "end_to_end")
    return {name: summary([timing.seconds[name] for timing in timings]) for name in names}
