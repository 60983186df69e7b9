import gzip
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from ml.cli import main
from ml.constants import CHANNELS
from ml.io import InputError, write_labels_png
from ml.segmentation import Segmentation
from ml.training.prepare import PrepareReport, SegmenterSpec, prepare_store
from ml.training.store import CellStore
from tests.ml.support import draw_field, write_field_pngs

ROOT = Path(__file__).resolve().parents[3]


def write_formats(folder: Path) -> np.ndarray:
    """Four fields of one drawn field: 8-bit PNG, 16-bit PNG, HPA .tif.gz and colour JPEG; their masks."""
    drawn = draw_field()
    folder.mkdir(parents=True, exist_ok=True)
    write_field_pngs(folder, "png8", drawn.field)
    for name in CHANNELS:
        plane = getattr(drawn.field, name)
        Image.fromarray(np.rint(plane * 65535).astype(np.uint16)).save(folder / f"png16_{name}.png")
        buffer = io.BytesIO()
        tifffile.imwrite(buffer, np.rint(plane * 65535).astype(np.uint16))
        (folder / f"tif_{name}.tif.gz").write_bytes(gzip.compress(buffer.getvalue()))
        colour = np.zeros((*plane.shape, 3), dtype=np.uint8)
        colour[..., {"red": [0], "green": [1], "blue": [2], "yellow": [0, 1]}[name]] = np.rint(plane * 255)[..., None]
        Image.fromarray(colour).save(folder / f"jpg_{name}.jpg", quality=98)
    (folder / "train.csv").write_text("ID,Label\njpg,1\nmissing,2\npng16,3\npng8,0|16\ntif,4\nunread,5\n")
    (folder / "unread_green.png").write_bytes(b"not an image")
    (folder / "unread_blue.png").write_bytes(b"not an image")
    masks = folder / "masks"
    masks.mkdir()
    for image_id in ("jpg", "png16", "png8", "tif", "unread"):
        write_labels_png(masks / f"{image_id}_cells.png", drawn.cell_labels)
    return drawn.cell_labels


def test_prepare_reads_every_format_and_skips_and_counts_absent_and_unreadable_fields(tmp_path):
    write_formats(tmp_path / "data")
    report = prepare_store(tmp_path / "data", tmp_path / "store", size_px=32, masks_dir=tmp_path / "data" / "masks")
    assert (report.fields, report.prepared, report.already_done, report.cells) == (6, 4, 0, 12)
    assert report.missing_images == ["missing"]
    assert list(report.failed) == ["unread"] and "is not a PNG or TIFF image" in report.failed["unread"]
    store = CellStore.open(tmp_path / "store")
    assert store.field_ids() == ["jpg", "png16", "png8", "tif"]
    png8 = store.read_field("png8").crops.astype(int)
    png16 = store.read_field("png16").crops
    assert np.abs(png16.astype(int) - png8).max() <= 1  # 16-bit values, rounded to 8 bits in the store
    assert np.array_equal(store.read_field("tif").crops, png16)
    assert np.abs(store.read_field("jpg").crops.astype(int) - png8).mean() < 2  # JPEG artefacts (at edges) only
    assert store.read_field("png8").image_labels == (0, 16)
    assert report.sentences() == [
        "4 field(s) prepared (12 cells), 0 already in the store.",
        "1 field(s) of the labels file have no image files and were skipped (first: missing).",
        f"1 field(s) could not be prepared and were skipped (first: unread: {report.failed['unread']}).",
    ]


def test_prepare_again_skips_finished_fields(tmp_path):
    write_formats(tmp_path / "data")
    prepare_store(tmp_path / "data", tmp_path / "store", size_px=32, masks_dir=tmp_path / "data" / "masks")
    again = prepare_store(tmp_path / "data", tmp_path / "store", size_px=32, masks_dir=tmp_path / "data" / "masks")
    assert (again.prepared, again.already_done, len(again.failed)) == (0, 4, 1)


def test_prepare_refuses_a_folder_without_any_images(tmp_path):
    (tmp_path / "train.csv").write_text("ID,Label\na,1\n")
    with pytest.raises(InputError, match=r"^None of the 1 field\(s\) of .*train.csv has image files in"):
        prepare_store(tmp_path, tmp_path / "store", size_px=32)


class BatchOnlySegmenter:
    """A network backend stand-in that segments only through `segment_batch` (the U-Net's GPU batch path)."""

    backend = "unet"

    def __init__(self, cell_labels: np.ndarray) -> None:
        self.cell_labels = cell_labels
        self.batches: list[int] = []

    def __call__(self, field):
        raise AssertionError("a network backend must be called in batches")

    def segment_batch(self, fields):
        self.batches.append(len(fields))
        return [Segmentation(self.cell_labels, self.cell_labels, "unet", ("blue", "green")) for _ in fields]


def test_unet_preparation_segments_fields_in_batches(tmp_path):
    cell_labels = write_formats(tmp_path / "data")
    segmenter = BatchOnlySegmenter(cell_labels)
    report = prepare_store(tmp_path / "data", tmp_path / "store", size_px=32, segmenter=segmenter, unet_batch_fields=3)
    assert segmenter.batches == [3, 1]  # jpg, png16, png8 | tif; unread fails when it is read
    assert report.prepared == 4 and CellStore.open(tmp_path / "store").cell_count() == 12


def test_prepare_command_prints_what_it_did(tmp_path, capsys):
    write_formats(tmp_path / "data")
    argv = ["prepare", "--data", str(tmp_path / "data"), "--store", str(tmp_path / "s"), "--size", "32",
            "--masks", str(tmp_path / "data" / "masks")]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "4 field(s) prepared (12 cells), 0 already in the store." in err
    assert "1 field(s) of the labels file have no image files and were skipped (first: missing)." in err


@pytest.mark.slow
def test_two_jobs_prepare_the_same_store_as_one(tmp_path):
    from ml.synth import write_dataset

    write_dataset(tmp_path / "data", n_images=4, seed=2, size_px=256, bit_depth=8)
    one = prepare_store(tmp_path / "data", tmp_path / "one", size_px=32, segmenter=SegmenterSpec("classical"))
    two = prepare_store(tmp_path / "data", tmp_path / "two", size_px=32, segmenter=SegmenterSpec("classical"), jobs=2)
    assert isinstance(two, PrepareReport) and (one.prepared, two.prepared) == (4, 4) and one.cells == two.cells
    a, b = CellStore.open(tmp_path / "one"), CellStore.open(tmp_path / "two")
    for image_id in a.field_ids():
        assert np.array_equal(a.read_field(image_id).crops, b.read_field(image_id).crops)


@pytest.mark.slow
def test_prepare_survives_kill_9_and_resumes(tmp_path):
    from ml.synth import write_dataset

    write_dataset(tmp_path / "data", n_images=12, seed=4, size_px=512, bit_depth=8)
    argv = [sys.executable, "-m", "ml", "prepare", "--data", str(tmp_path / "data"), "--store", str(tmp_path / "s"),
            "--size", "32", "--device", "cpu"]  # fmt: skip
    process = subprocess.Popen(argv, cwd=ROOT, stderr=subprocess.DEVNULL, start_new_session=True)
    fields = tmp_path / "s" / "fields"
    deadline = time.monotonic() + 120
    while not (fields.is_dir() and len(os.listdir(fields)) >= 2) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    done_before = len(os.listdir(fields))
    assert 2 <= done_before < 12
    report = prepare_store(tmp_path / "data", tmp_path / "s", size_px=32, segmenter=SegmenterSpec("classical"))
    assert report.already_done >= done_before and report.prepared + report.already_done == 12
    assert list((tmp_path / "s" / ".partial").iterdir()) == []  # the killed field's half was cleared
    fresh = prepare_store(tmp_path / "data", tmp_path / "fresh", size_px=32, segmenter=SegmenterSpec("classical"))
    assert fresh.cells == CellStore.open(tmp_path / "s").cell_count()
