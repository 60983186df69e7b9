"""The cell store: every field's cell crops cached once on disk (zarr v3), read a cell at a time.

Training reads cells from here instead of holding every crop in memory, so its resident memory
does not grow with the number of fields (only the index does: a few numbers per cell).

Layout of a store folder:
- `zarr.json`: the root group, attributes `{"format": "hpaweb-cells", "version": 1, "size_px": S, "channels"}`;
- `fields/{ID}/`: one group per field (the ID percent-quoted), attributes `image_id`, `image_labels`
  (class indices), `cells`, `height`, `width`, `segmentation`, `cell_classes` (how many cells carry
  classes of their own), with arrays `crops` uint8 (N, 4, S, S) (one chunk per cell, sharded per
  field, so one file), `cell_ids`, `bboxes` (half-open rows/columns), `areas_px`, `cell_targets`
  float32 (N, 19) (a cell's own classes, NaN where it has none) and `cell_labels` uint16 (H, W), the
  segmentation the crops come from;
- `.partial/`: fields being written. A field is written there and renamed into `fields/` when
  complete (a rename is atomic), so a killed writer leaves no half field, and any process may
  write any field at the same time as others write theirs;
- `index.npz`: the index of every complete field (IDs, cell counts, image labels, cell ids and
  the cells with their own classes, sparse), a cache rebuilt whenever the set of fields changes.
"""

import json
import os
import shutil
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

import numpy as np
import torch
import zarr
from torch.utils.data import Dataset

from ml.constants import CHANNELS, NUM_CLASSES
from ml.crops import crop_cells
from ml.io import FieldImages, InputError

STORE_FORMAT = "hpaweb-cells"
STORE_VERSION = 1


@dataclass(frozen=True, eq=False)
class StoreIndex:
    """Every complete field of a store, in sorted ID order, and where its cells sit in the cell order."""

    image_ids: tuple[str, ...]
    cell_counts: np.ndarray  # int64 (F,)
    image_labels: np.ndarray  # float32 (F, 19) multi-hot
    cell_ids: np.ndarray  # int64 (N,), all fields' cells in order
    labelled_rows: np.ndarray  # int64 (M,): the cells (rows of cell_ids) with classes of their own
    labelled_targets: np.ndarray  # float32 (M, 19): their classes

    def rows_of(self, image_ids: Sequence[str]) -> np.ndarray:
        """The cell rows (into `cell_ids`) of `image_ids`, field by field in that order."""
        position = {image_id: row for row, image_id in enumerate(self.image_ids)}
        offsets = self.offsets
        parts = [np.arange(offsets[position[i]], offsets[position[i] + 1]) for i in image_ids]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)

    @property
    def offsets(self) -> np.ndarray:
        """int64 (F + 1,): field f holds the cells offsets[f] .. offsets[f + 1] - 1."""
        return np.concatenate([[0], np.cumsum(self.cell_counts)]).astype(np.int64)


@dataclass(frozen=True, eq=False)
class StoredField:
    image_id: str
    image_labels: tuple[int, ...]
    crops: np.ndarray  # uint8 (N, 4, S, S)
    cell_ids: np.ndarray  # int64 (N,)
    bboxes: np.ndarray  # int64 (N, 4)
    areas_px: np.ndarray  # int64 (N,)
    cell_targets: np.ndarray  # float32 (N, 19), NaN rows: no cell label


class CellStore:
    """A store folder (see the module's docstring); `create` or `open` it."""

    def __init__(self, path: Path, *, size_px: int) -> None:
        self.path = Path(path)
        self.size_px = size_px
        self._arrays: OrderedDict[str, zarr.Array] = OrderedDict()  # open crop arrays, least recent first

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, *, size_px: int) -> "CellStore":
        """The store at `path`, made empty if it does not exist; an existing one must have crops of `size_px`."""
        path = Path(path)
        if (path / "zarr.json").is_file():
            store = cls.open(path)
            if store.size_px != size_px:
                raise InputError(
                    f"The cell store {path} holds {store.size_px} px crops, not {size_px} px; "
                    "choose another store folder or the same crop size."
                )
            return store
        if size_px < 8:
            raise InputError(f"A crop side of {size_px} px is too small; use at least 8 px.")
        path.mkdir(parents=True, exist_ok=True)
        group = zarr.open_group(str(path), mode="a", zarr_format=3)
        group.attrs.update(
            {"format": STORE_FORMAT, "version": STORE_VERSION, "size_px": size_px, "channels": list(CHANNELS)}
        )
        (path / "fields").mkdir(exist_ok=True)
        return cls(path, size_px=size_px)

    @classmethod
    def open(cls, path: str | Path) -> "CellStore":
        path = Path(path)
        try:
            attrs = json.loads((path / "zarr.json").read_text())["attributes"]
        except (OSError, ValueError, KeyError):
            raise InputError(
                f"{path} is not a cell store; make one with `python -m ml prepare --data DIR --store {path}`."
            ) from None
        if attrs.get("format") != STORE_FORMAT or attrs.get("version") != STORE_VERSION:
            raise InputError(
                f"{path} is not a cell store of this release (format {attrs.get('format')!r}, version "
                f"{attrs.get('version')!r}); prepare it again into a new folder."
            )
        return cls(path, size_px=int(attrs["size_px"]))

    # -- writing ---------------------------------------------------------------------------
    def has_field(self, image_id: str) -> bool:
        return (self._field_path(image_id) / "zarr.json").is_file()

    def add_field(
        self,
        image_id: str,
        stack: FieldImages | np.ndarray,
        cell_labels: np.ndarray,
        *,
        image_labels: Sequence[int] = (),
        cell_classes: Mapping[int, Sequence[int]] | None = None,
        segmentation: str = "",
        replace: bool = False,
    ) -> int:
        """Crop every cell of a field and store it atomically; returns its number of cells.

        `stack` is the field (or float32 (4, H, W) in [0, 1], `CHANNELS` order), `cell_labels` its
        (H, W) label image (0 = background). `cell_classes` gives cells (by id) classes of their
        own; the others have no cell label. Without image labels a field takes the union of its
        cells' classes. An existing field is kept unless `replace`.
        """
        if self.has_field(image_id) and not replace:
            return self.read_field_attrs(image_id)["cells"]
        pixels = stack.stack() if isinstance(stack, FieldImages) else np.asarray(stack, dtype=np.float32)
        cell_labels = np.asarray(cell_labels)
        if pixels.ndim != 3 or pixels.shape[0] != len(CHANNELS) or pixels.shape[1:] != cell_labels.shape:
            raise InputError(
                f"Field {image_id}: the image {pixels.shape} must be (4, H, W) and match its cell labels "
                f"{cell_labels.shape}."
            )
        if cell_labels.size and (cell_labels.min() < 0 or cell_labels.max() > np.iinfo(np.uint16).max):
            raise InputError(f"Field {image_id}: cell ids must lie in 0..65535.")
        cell_labels = cell_labels.astype(np.uint16)
        crops = crop_cells(pixels, cell_labels, size_px=self.size_px)
        targets = np.full((len(crops), NUM_CLASSES), np.nan, dtype=np.float32)
        position = {int(cell_id): row for row, cell_id in enumerate(crops.cell_ids)}
        for cell_id, classes in (cell_classes or {}).items():
            if int(cell_id) not in position:
                raise InputError(f"Field {image_id}: cell {cell_id} has classes but no pixels in the cell labels.")
            targets[position[int(cell_id)]] = _multi_hot(classes, what=f"Field {image_id}, cell {cell_id}")
        labels = sorted({int(v) for v in image_labels})
        if not labels and cell_classes:
            labels = sorted({int(v) for classes in cell_classes.values() for v in classes})
        _multi_hot(labels, what=f"Field {image_id}")
        images = np.round(crops.images * 255).astype(np.uint8)
        return self._write_field(
            image_id,
            images,
            cell_ids=crops.cell_ids,
            bboxes=crops.bboxes,
            areas_px=crops.areas_px,
            targets=targets,
            cell_labels=cell_labels,
            labels=labels,
            segmentation=segmentation,
        )

    def add_cropped(
        self, image_id: str, crops: np.ndarray, *, image_labels: Sequence[int], segmentation: str = ""
    ) -> int:
        """Store cells cropped elsewhere: uint8 (N, 4, S, S) crops of one field, its image labels (no
        segmentation is kept, so the competition metric cannot score the field; the benchmarks use this)."""
        crops = np.asarray(crops)
        if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[1:] != (len(CHANNELS), self.size_px, self.size_px):
            raise InputError(f"Field {image_id}: crops must be uint8 (N, 4, {self.size_px}, {self.size_px}).")
        count = len(crops)
        labels = sorted({int(v) for v in image_labels})
        _multi_hot(labels, what=f"Field {image_id}")
        return self._write_field(
            image_id,
            crops,
            cell_ids=np.arange(1, count + 1, dtype=np.int64),
            bboxes=np.zeros((count, 4), dtype=np.int64),
            areas_px=np.zeros(count, dtype=np.int64),
            targets=np.full((count, NUM_CLASSES), np.nan, dtype=np.float32),
            cell_labels=np.zeros((0, 0), dtype=np.uint16),
            labels=labels,
            segmentation=segmentation,
        )

    def _write_field(
        self, image_id, images, *, cell_ids, bboxes, areas_px, targets, cell_labels, labels, segmentation
    ) -> int:
        """Write one field under `.partial/` and rename it into `fields/`: it appears whole or not at all."""
        partial = self.path / ".partial" / f"{_quoted(image_id)}.{uuid.uuid4().hex}"
        partial.parent.mkdir(parents=True, exist_ok=True)
        try:
            group = zarr.open_group(str(partial), mode="w", zarr_format=3)
            count = len(images)
            if count:
                side = self.size_px
                crop_array = group.create_array(
                    "crops", shape=images.shape, dtype="uint8", chunks=(1, 4, side, side), shards=images.shape
                )
                crop_array[...] = images
            for name, values in (
                ("cell_ids", cell_ids),
                ("bboxes", bboxes),
                ("areas_px", areas_px),
                ("cell_targets", targets),
            ):
                chunks = tuple(max(1, side) for side in values.shape)
                array = group.create_array(name, shape=values.shape, dtype=values.dtype, chunks=chunks)
                if values.size:
                    array[...] = values
            height, width = cell_labels.shape
            label_array = group.create_array(
                "cell_labels",
                shape=cell_labels.shape,
                dtype="uint16",
                chunks=(max(1, min(1024, height)), max(1, min(1024, width))),
            )
            if cell_labels.size:
                label_array[...] = cell_labels
            group.attrs.update(
                {
                    "image_id": image_id,
                    "image_labels": labels,
                    "cells": count,
                    "height": height,
                    "width": width,
                    "segmentation": segmentation,
                    "cell_classes": int((~np.isnan(targets).any(axis=1)).sum()) if count else 0,
                }
            )
            final = self._field_path(image_id)
            if final.exists():  # replace: move the old one aside first, then drop it
                aside = self.path / ".partial" / f"{_quoted(image_id)}.old.{uuid.uuid4().hex}"
                os.replace(final, aside)
                shutil.rmtree(aside, ignore_errors=True)
            (self.path / "fields").mkdir(exist_ok=True)
            os.replace(partial, final)  # the completion mark: the field exists once it is whole
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        self._arrays.pop(image_id, None)
        return count

    def remove_partial(self) -> None:
        """Drop what killed writers left under `.partial/` (only while no writer runs)."""
        shutil.rmtree(self.path / ".partial", ignore_errors=True)

    # -- reading ---------------------------------------------------------------------------
    def field_ids(self) -> list[str]:
        """The IDs of every complete field, sorted."""
        folder = self.path / "fields"
        if not folder.is_dir():
            return []
        return sorted(unquote(entry.name) for entry in os.scandir(folder) if entry.is_dir())

    def read_field_attrs(self, image_id: str) -> dict:
        return json.loads((self._field_path(image_id) / "zarr.json").read_text())["attributes"]

    def index(self) -> StoreIndex:
        """The index of every complete field, from `index.npz` when it is current."""
        image_ids = tuple(self.field_ids())
        cached = self.path / "index.npz"
        if cached.is_file():
            try:
                with np.load(cached, allow_pickle=False) as saved:
                    if tuple(saved["image_ids"].tolist()) == image_ids:
                        return StoreIndex(
                            image_ids,
                            saved["cell_counts"],
                            saved["image_labels"],
                            saved["cell_ids"],
                            saved["labelled_rows"],
                            saved["labelled_targets"],
                        )
            except (OSError, ValueError, KeyError):
                pass  # unreadable: rebuilt below
        counts = np.zeros(len(image_ids), dtype=np.int64)
        labels = np.zeros((len(image_ids), NUM_CLASSES), dtype=np.float32)
        cell_ids = [np.zeros(0, np.int64)]
        labelled_rows, labelled_targets = [np.zeros(0, np.int64)], [np.zeros((0, NUM_CLASSES), np.float32)]
        start = 0
        for row, image_id in enumerate(image_ids):
            group = zarr.open_group(str(self._field_path(image_id)), mode="r")
            attrs = dict(group.attrs)
            counts[row] = attrs["cells"]
            labels[row, attrs["image_labels"]] = 1.0
            cell_ids.append(_array(group, "cell_ids", (counts[row],), np.int64))
            if attrs.get("cell_classes"):
                targets = _array(group, "cell_targets", (counts[row], NUM_CLASSES), np.float32)
                own = np.flatnonzero(~np.isnan(targets).any(axis=1))
                labelled_rows.append(start + own)
                labelled_targets.append(targets[own])
            start += int(counts[row])
        index = StoreIndex(
            image_ids,
            counts,
            labels,
            np.concatenate(cell_ids),
            np.concatenate(labelled_rows),
            np.concatenate(labelled_targets),
        )
        temporary = self.path / f".index.{uuid.uuid4().hex}.npz"
        try:
            np.savez(
                temporary,
                image_ids=np.array(image_ids, dtype=str),
                cell_counts=counts,
                image_labels=labels,
                cell_ids=index.cell_ids,
                labelled_rows=index.labelled_rows,
                labelled_targets=index.labelled_targets,
            )
            os.replace(temporary, cached)
        except OSError:
            pass  # a read-only store still trains; the index is rebuilt next time
        finally:
            temporary.unlink(missing_ok=True)
        return index

    def cell_count(self) -> int:
        return int(self.index().cell_counts.sum())

    def read_field(self, image_id: str) -> StoredField:
        group = zarr.open_group(str(self._field_path(image_id)), mode="r")
        attrs = dict(group.attrs)
        count = int(attrs["cells"])
        side = self.size_px
        crops = group["crops"][...] if count else np.zeros((0, 4, side, side), dtype=np.uint8)
        return StoredField(
            image_id=image_id,
            image_labels=tuple(attrs["image_labels"]),
            crops=crops,
            cell_ids=_array(group, "cell_ids", (count,), np.int64),
            bboxes=_array(group, "bboxes", (count, 4), np.int64),
            areas_px=_array(group, "areas_px", (count,), np.int64),
            cell_targets=_array(group, "cell_targets", (count, NUM_CLASSES), np.float32),
        )

    def read_cell_labels(self, image_id: str) -> np.ndarray:
        """uint16 (H, W): the segmentation the field's crops come from."""
        return zarr.open_array(str(self._field_path(image_id) / "cell_labels"), mode="r")[...]

    def read_crop(self, image_id: str, row: int) -> np.ndarray:
        """uint8 (4, S, S): one cell, read from disk alone (a few open fields are kept at hand)."""
        array = self._arrays.get(image_id)
        if array is None:
            array = zarr.open_array(str(self._field_path(image_id) / "crops"), mode="r")
            self._arrays[image_id] = array
            if len(self._arrays) > 64:
                self._arrays.popitem(last=False)
        else:
            self._arrays.move_to_end(image_id)
        return array[row]

    def iter_crops(self, image_ids: Sequence[str], *, batch_size: int = 512) -> Iterator[np.ndarray]:
        """uint8 (B, 4, S, S) batches of the cells of `image_ids`, in order, a field at a time."""
        pending: list[np.ndarray] = []
        held = 0
        for image_id in image_ids:
            if self.read_field_attrs(image_id)["cells"] == 0:
                continue
            crops = zarr.open_array(str(self._field_path(image_id) / "crops"), mode="r")[...]
            pending.append(crops)
            held += len(crops)
            while held >= batch_size:
                joined = np.concatenate(pending)
                yield joined[:batch_size]
                rest = joined[batch_size:]
                pending, held = ([rest] if len(rest) else []), len(rest)
        if held:
            yield np.concatenate(pending)

    def cell_classes(self, image_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(rows (M,), float32 (M, 19) classes) of the cells of `image_ids` (rows in their cell order)
        that have classes of their own; sparse, since most cells have none."""
        index = self.index()
        rows = index.rows_of(image_ids)
        where = np.full(len(index.cell_ids), -1, dtype=np.int64)
        where[rows] = np.arange(len(rows))
        chosen = where[index.labelled_rows] >= 0
        return where[index.labelled_rows[chosen]], index.labelled_targets[chosen]

    def cell_targets(self, image_ids: Sequence[str]) -> np.ndarray:
        """float32 (N, 19): the cells' own classes (NaN rows where a cell has none), in cell order."""
        rows, targets = self.cell_classes(image_ids)
        dense = np.full((len(self.index().rows_of(image_ids)), NUM_CLASSES), np.nan, dtype=np.float32)
        dense[rows] = targets
        return dense

    def cell_ids(self, image_ids: Sequence[str]) -> np.ndarray:
        """int64 (N,): the cells' ids in their fields' label images, in cell order."""
        index = self.index()
        return index.cell_ids[index.rows_of(image_ids)]

    def _field_path(self, image_id: str) -> Path:
        return self.path / "fields" / _quoted(image_id)

    def __getstate__(self) -> dict:  # open arrays stay behind when a data loader worker is started
        return {"path": self.path, "size_px": self.size_px}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], size_px=state["size_px"])


class StoreCellDataset(Dataset):
    """(crop float32 (4, S, S) in [0, 1], target float32 (19,)) of chosen cells of a store.

    `image_ids` are the fields (in their cell order), `targets` (N, 19) one row per cell of those
    fields; item i is the cell `rows[i]` of that order. Crops are read from disk on demand.
    """

    def __init__(
        self, store: CellStore, image_ids: Sequence[str], counts: np.ndarray, targets: np.ndarray, rows: np.ndarray
    ) -> None:
        self.store = store
        self.image_ids = tuple(image_ids)
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.targets = targets
        self.rows = np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        row = int(self.rows[position])
        field = int(np.searchsorted(self.offsets, row, side="right")) - 1
        crop = self.store.read_crop(self.image_ids[field], row - int(self.offsets[field]))
        target = np.asarray(self.targets[row], dtype=np.float32)
        return torch.from_numpy(crop.astype(np.float32) / 255.0), torch.from_numpy(target)


def _multi_hot(classes: Sequence[int], *, what: str) -> np.ndarray:
    values = [int(v) for v in classes]
    if any(not 0 <= v < NUM_CLASSES for v in values):
        raise InputError(f"{what}: classes must lie in 0..{NUM_CLASSES - 1}, got {list(classes)}.")
    target = np.zeros(NUM_CLASSES, dtype=np.float32)
    target[values] = 1.0
    return target


def _array(group: zarr.Group, name: str, shape: tuple[int, ...] | None, dtype) -> np.ndarray:
    array = group[name]
    if array.size == 0:
        return np.zeros(shape if shape is not None else array.shape, dtype=dtype)
    return np.asarray(array[...], dtype=dtype)


def _quoted(image_id: str) -> str:
    quoted = quote(image_id, safe="-_.")
    return quoted.replace(".", "%2E") if quoted in (".", "..") else quoted
