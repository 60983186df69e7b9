"""Preparing a cell store from a Kaggle-layout folder (`python -m ml prepare`, the first stage of `ml train`).

Each field of `train.csv` is read, segmented and cropped once into the store (`ml.training.store`).
- `jobs` processes work side by side, each with its own segmenter; every field is written
  atomically, so preparation resumes after a kill: finished fields are skipped.
- With the `unet` backend the parent process segments fields in batches on the device
  (`Segmenter.segment_batch`, the U-Net's GPU batch path) and the processes crop and write.
- IDs of `train.csv` whose images are absent are skipped and counted; a field that cannot be
  read is reported with its reason and skipped, and the rest go on.
- A cell label image already in `masks_dir` (`{ID}_cells.png`, the earlier training cache) is
  used instead of segmenting again.
"""

import multiprocessing
import sys
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ml.io import InputError, find_fields, read_field, read_labels_png
from ml.segmentation import Segmenter
from ml.training.data import read_image_labels
from ml.training.store import CellStore


@dataclass(frozen=True)
class SegmenterSpec:
    """How to build a `Segmenter` (it is built again in every preparation process)."""

    backend: str = "classical"
    nuclei_weights: Path | None = None
    cell_weights: Path | None = None
    nuclei_model: Path | None = None
    cell_model: Path | None = None
    device: str = "cpu"

    def build(self) -> Segmenter:
        return Segmenter(
            self.backend,
            nuclei_weights=self.nuclei_weights,
            cell_weights=self.cell_weights,
            nuclei_model=self.nuclei_model,
            cell_model=self.cell_model,
            device=self.device,
        )


@dataclass
class PrepareReport:
    """What one preparation did."""

    fields: int = 0  # IDs of the labels file
    prepared: int = 0  # written by this run
    already_done: int = 0  # found complete in the store
    missing_images: list[str] = field(default_factory=list)  # IDs without image files
    failed: dict[str, str] = field(default_factory=dict)  # ID -> why it could not be prepared
    cells: int = 0  # cells written by this run

    def sentences(self) -> list[str]:
        lines = [f"{self.prepared} field(s) prepared ({self.cells} cells), {self.already_done} already in the store."]
        if self.missing_images:
            lines.append(
                f"{len(self.missing_images)} field(s) of the labels file have no image files and were skipped "
                f"(first: {self.missing_images[0]})."
            )
        if self.failed:
            first = next(iter(self.failed.items()))
            lines.append(
                f"{len(self.failed)} field(s) could not be prepared and were skipped (first: {first[0]}: {first[1]})."
            )
        return lines


def prepare_store(
    data_dir: Path,
    store_path: Path,
    *,
    size_px: int,
    segmenter: SegmenterSpec | Segmenter = SegmenterSpec(),
    jobs: int = 1,
    image_ids: Sequence[str] | None = None,
    max_fields: int | None = None,
    masks_dir: Path | None = None,
    unet_batch_fields: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> PrepareReport:
    """Fill the store at `store_path` with the fields of `data_dir/train.csv` (or `image_ids`, the
    first `max_fields`); returns what it did. Raises `InputError` when nothing can be prepared."""
    data_dir = Path(data_dir)
    labels = read_image_labels(data_dir / "train.csv")
    wanted = sorted(labels) if image_ids is None else list(image_ids)
    if max_fields:
        wanted = wanted[:max_fields]
    files = find_fields(data_dir, public_formats=True)
    report = PrepareReport(fields=len(wanted))
    report.missing_images = [i for i in wanted if i not in files]
    present = [i for i in wanted if i in files]
    if not present:
        raise InputError(
            f"None of the {len(wanted)} field(s) of {data_dir / 'train.csv'} has image files in {data_dir}; "
            "each ID needs {ID}_green and {ID}_blue files (red and yellow when available)."
        )
    store = CellStore.create(store_path, size_px=size_px)
    store.remove_partial()
    todo = [i for i in present if not store.has_field(i)]
    report.already_done = len(present) - len(todo)
    done = 0

    def finished(image_id: str, result: int | str) -> None:
        nonlocal done
        if isinstance(result, str):
            report.failed[image_id] = result
        else:
            report.prepared += 1
            report.cells += result
        done += 1
        if progress is not None:
            progress(done, len(todo))

    spec = segmenter if isinstance(segmenter, SegmenterSpec) else None
    backend = segmenter.backend
    work = [(i, files[i], labels.get(i, ()), _cached_mask(masks_dir, i)) for i in todo]
    if backend == "unet":
        _prepare_with_batches(store, work, segmenter, jobs=jobs, batch=unet_batch_fields, finished=finished)
    elif jobs <= 1 or len(work) <= 1:
        built = spec.build() if spec is not None else segmenter
        for item in work:
            finished(item[0], _prepare_one(store, built, *item))
    else:
        if spec is None:
            raise ValueError("Preparing with several jobs needs a SegmenterSpec, so each process builds its own.")
        with _pool(jobs, store, spec) as pool:
            futures = [(item[0], pool.submit(_worker_prepare, *item)) for item in work]
            for image_id, future in futures:
                finished(image_id, future.result())
    return report


def _prepare_with_batches(store: CellStore, work: list, segmenter, *, jobs: int, batch: int, finished) -> None:
    """unet: read fields on threads, segment `batch` at a time in this process (the network's batch
    path), then crop here (`jobs` 1) or in `jobs` processes (which read the field again)."""
    built = segmenter.build() if isinstance(segmenter, SegmenterSpec) else segmenter
    croppers = _pool(jobs, store, None) if jobs > 1 else None
    pending: list[tuple[str, Future]] = []
    try:
        with ThreadPoolExecutor(max_workers=2) as readers:
            for start in range(0, len(work), batch):
                chunk = work[start : start + batch]
                reads = [(item, readers.submit(read_field, item[1])) for item in chunk]
                ready = []  # (item, field); a cached mask is read where the field is cropped
                for item, future in reads:
                    try:
                        ready.append((item, future.result()))
                    except InputError as error:
                        finished(item[0], str(error))
                to_segment = [(item, f) for item, f in ready if item[3] is None]
                segmented = built.segment_batch([f for _item, f in to_segment]) if to_segment else []
                masks = {item[0]: result.cell_labels for (item, _f), result in zip(to_segment, segmented, strict=True)}
                for item, field_images in ready:
                    mask = item[3] if item[3] is not None else masks[item[0]]  # a Path or the new labels
                    if croppers is None:
                        finished(item[0], _store_field(store, item[0], field_images, mask, item[2], built.backend))
                    else:
                        future = croppers.submit(_worker_prepare, item[0], item[1], item[2], mask, built.backend)
                        pending.append((item[0], future))
                del ready, to_segment, segmented
                while len(pending) > 4 * jobs:  # at most a few masks wait for a cropper
                    image_id, future = pending.pop(0)
                    finished(image_id, future.result())
            for image_id, future in pending:
                finished(image_id, future.result())
    finally:
        if croppers is not None:
            croppers.shutdown()


def _store_field(store: CellStore, image_id: str, field_images, mask, labels, backend: str) -> int | str:
    try:
        if isinstance(mask, Path):
            mask = read_labels_png(mask)
        return store.add_field(image_id, field_images, mask, image_labels=labels, segmentation=backend)
    except InputError as error:
        return str(error)


_WORKER: dict = {}


def _pool(jobs: int, store: CellStore, spec: SegmenterSpec | None) -> ProcessPoolExecutor:
    # spawn, not fork: the parent may hold torch threads or a CUDA context, which fork copies badly.
    return ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_start,
        initargs=(store.path, store.size_px, spec),
    )


def _worker_start(store_path: Path, size_px: int, spec: SegmenterSpec | None) -> None:
    import torch

    torch.set_num_threads(1)
    _WORKER["store"] = CellStore(store_path, size_px=size_px)
    _WORKER["segmenter"] = spec.build() if spec is not None else None


def _worker_prepare(image_id, paths, labels, mask, backend: str | None = None) -> int | str:
    return _prepare_one(_WORKER["store"], _WORKER["segmenter"], image_id, paths, labels, mask, backend=backend)


def _prepare_one(
    store: CellStore,
    segmenter: Segmenter | None,
    image_id: str,
    paths: Mapping[str, Path],
    labels: Sequence[int],
    mask: np.ndarray | Path | None,
    backend: str | None = None,
) -> int | str:
    """The number of cells written, or why the field could not be prepared."""
    try:
        field_images = read_field(paths)
        if isinstance(mask, Path):
            mask = read_labels_png(mask)
        if mask is None:
            mask = segmenter(field_images).cell_labels
        return store.add_field(
            image_id,
            field_images,
            mask,
            image_labels=labels,
            segmentation=backend or (segmenter.backend if segmenter is not None else ""),
        )
    except InputError as error:
        return str(error)
    except MemoryError:
        print(f"Field {image_id} did not fit in memory.", file=sys.stderr)
        return "it did not fit in memory"


def _cached_mask(masks_dir: Path | None, image_id: str) -> Path | None:
    if masks_dir is None:
        return None
    path = Path(masks_dir) / f"{image_id}_cells.png"
    return path if path.is_file() else None
