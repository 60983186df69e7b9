"""The statistics of `bench.realism` and the ranking of `bench.real_fields`, on images whose answers are known."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.real_fields import label_ranks, read_labels_in_order, top_in_labels
from bench.realism import Sample, cell_ids, morphology_rows, spectrum_slope, touching_fraction

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_spectrum_slope_is_zero_for_white_noise_and_steeper_for_smoother_images():
    rng = np.random.default_rng(0)
    white = rng.standard_normal((256, 256))
    assert abs(spectrum_slope(white)) < 0.3
    frequency = np.fft.fftfreq(256)
    radius = np.hypot(*np.meshgrid(frequency, frequency))
    radius[0, 0] = 1.0
    # Amplitude ~ f^-1.5, so power ~ f^-3.
    pink = np.real(np.fft.ifft2(np.fft.fft2(white) * radius**-1.5))
    assert -3.4 < spectrum_slope(pink) < -2.6


def test_touching_fraction_counts_cells_within_a_few_pixels_of_another():
    labels = np.zeros((2048, 2048), dtype=np.uint16)
    labels[100:200, 100:200] = 1
    labels[100:200, 204:300] = 2  # 4 px gap: touching
    labels[1000:1100, 1000:1100] = 3  # alone
    assert touching_fraction(labels) == pytest.approx(2 / 3)


def test_cell_ids_drop_specks_and_morphology_scales_areas_to_2048_px():
    labels = np.zeros((1024, 1024), dtype=np.uint16)
    labels[:100, :100] = 1  # 10,000 px at 1024 -> 40,000 px at 2048
    labels[500, 500] = 2  # a speck
    np.testing.assert_array_equal(cell_ids(labels), [1])
    rows = morphology_rows([Sample({}, labels, labels)])
    assert rows["cell area, median (px)"] == 40_000
    assert rows["cells per megapixel"] == pytest.approx(1 / (2048 * 2048 / 1e6))


def test_label_ranks_count_ties_against_the_label_and_top_in_labels_is_a_share():
    scores = np.array([0.1, 0.9, 0.5, 0.5] + [0.0] * 15)
    assert label_ranks(scores, (1, 2, 0)) == [1, 3, 4]
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    assert top_in_labels(probabilities, (0,)) == pytest.approx(2 / 3)


def test_read_labels_in_order_keeps_the_order_of_train_csv(tmp_path):
    (tmp_path / "train.csv").write_text("ID,Label\na,7|1|2|0\nb,13\n")
    assert read_labels_in_order(tmp_path / "train.csv") == {"a": (7, 1, 2, 0), "b": (13,)}


@pytest.mark.parametrize("module", ["bench.realism", "bench.real_fields"])
def test_the_benchmark_runs_as_a_module_and_describes_its_options(module):
    done = subprocess.run(
        [sys.executable, "-m", module, "--help"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: python -m {module} ")


def test_real_fields_says_what_is_wrong_with_a_missing_checkpoint(tmp_path):
    (tmp_path / "train.csv").write_text("ID,Label\na,0\n")
    done = subprocess.run(
        [sys.executable, "-m", "bench.real_fields", "--data", str(tmp_path), "--model", str(tmp_path / "none.pt")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "does not exist; pass --model with a .pt file." in done.stderr
