import csv

import numpy as np
import pytest

from ml.cli import main
from ml.cli import options as cli_options
from ml.io import write_labels_png
from ml.measure import measurement_names
from ml.qc import QC_FLAGS
from tests.ml.segmentation.support import ThresholdSegmenter
from tests.ml.support import draw_field, write_field_pngs


@pytest.fixture(autouse=True)
def threshold_segmenter(monkeypatch):
    monkeypatch.setattr(cli_options, "Segmenter", ThresholdSegmenter)


def read_csv(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_measure_writes_one_row_per_cell_with_qc_flags_from_given_labels(images_dir, tmp_path):
    labels = tmp_path / "labels"
    labels.mkdir()
    drawn = draw_field()
    for image_id, field in (("a-cells", drawn), ("b-empty", draw_field(centres=()))):
        write_labels_png(labels / f"{image_id}_cells.png", field.cell_labels)
        write_labels_png(labels / f"{image_id}_nuclei.png", field.nuclei_labels)
    out = tmp_path / "features.csv"
    assert main(["measure", "--images", str(images_dir), "--out", str(out), "--labels", str(labels)]) == 0
    rows = read_csv(out)
    assert [(row["ID"], row["cell_id"], row["qc_flags"]) for row in rows] == [
        ("a-cells", str(i), "") for i in (1, 2, 3)
    ]
    assert list(rows[0]) == ["ID", "cell_id", "qc_flags", *measurement_names()]
    area = (drawn.cell_labels == 1).sum()
    assert float(rows[0]["area_px"]) == area and rows[0]["lbp_000"] != ""


def test_measure_segments_when_no_labels_are_given_and_takes_qc_options(images_dir, tmp_path):
    out = tmp_path / "features.csv"
    code = main(
        ["measure", "--images", str(images_dir), "--out", str(out), "--no-texture", "--qc-min-area-px", "100000"]
    )
    assert code == 0
    rows = read_csv(out)
    assert len(rows) == 3 and all(row["qc_flags"] == "too_small" for row in rows)
    assert "lbp_000" not in rows[0] and "haralick_contrast" not in rows[0]


def test_measure_says_which_label_file_is_missing(images_dir, tmp_path, capsys):
    (tmp_path / "labels").mkdir()
    code = main(
        ["measure", "--images", str(images_dir), "--out", str(tmp_path / "f.csv"), "--labels", str(tmp_path / "labels")]
    )
    assert code == 1
    assert "a-cells_cells.png is not in" in capsys.readouterr().err


def test_train_classical_writes_a_classifier_that_predict_runs(tmp_path):
    data = tmp_path / "train"
    data.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for index in range(4):
        drawn = draw_field()
        field = drawn.field
        noise = rng.random(field.green.shape).astype(np.float32)
        green = field.green * (0.3 + 0.7 * noise) if index % 2 else field.green
        from dataclasses import replace

        write_field_pngs(data, f"f{index}", replace(field, green=green))
        rows.append((f"f{index}", "0" if index % 2 else "16"))
    with open(data / "train.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([("ID", "Label"), *rows])
    model = tmp_path / "baseline.skops"
    assert main(["train-classical", "--data", str(data), "--out", str(model), "--features", "haralick"]) == 0
    assert model.is_file()
    out = tmp_path / "submission.csv"
    cells = tmp_path / "cells.csv"
    assert (
        main(["predict", "--images", str(data), "--out", str(out), "--model", str(model), "--cells-csv", str(cells)])
        == 0
    )
    cell_rows = read_csv(cells)
    assert len(cell_rows) == 12 and {row["top_class"] for row in cell_rows} <= {"Nucleoplasm", "Cytosol"}
    for row in cell_rows:
        flagged = {flag for flag in QC_FLAGS if row[f"qc_{flag}"] == "1"}
        assert set(filter(None, row["qc_flags"].split("|"))) == flagged
    # The plain fields' disks are clean; the noisy green of the others leaves holes in thresholded masks.
    assert [row["qc_flags"] for row in cell_rows if row["ID"] in ("f0", "f2")] == [""] * 6
    assert main(["train-classical", "--data", str(data), "--out", str(tmp_path / "model.pt")]) == 2
