from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from ml.segmentation.hpa import postprocess
from ml.segmentation.hpa.postprocess import label_cell, label_nuclei
from ml.segmentation.matching import iou_table
from tests.ml.segmentation.support import SHARED_DIR, blocky, grid_predictions

# Reference outputs of hpacellseg's label_nuclei / label_cell under scikit-image >= 0.25 (our
# 0.26), on synthetic network outputs; see README.txt there.
FIXTURES = SHARED_DIR / "hpacellseg" / "label_fixtures"


VARIANTS = ("clean", "noisy", "touching")


def reference(variant: str, output: str) -> np.ndarray:
    return np.asarray(Image.open(FIXTURES / f"{variant}_{output}_skimage_ge_0.25.png")).astype(np.int64)


@dataclass(frozen=True)
class Case:
    variant: str
    nuclei_pred: np.ndarray
    cell_pred: np.ndarray
    nuclei: np.ndarray  # label_nuclei
    cell_nuclei: np.ndarray  # label_cell
    cells: np.ndarray  # label_cell


@pytest.fixture(scope="module", params=VARIANTS)
def case(request) -> Case:
    if not (FIXTURES / f"{request.param}_inputs.npz").is_file():
        pytest.skip(f"HPA reference fixtures not found at {FIXTURES} (shared reference data is not checked out)")
    inputs = np.load(FIXTURES / f"{request.param}_inputs.npz")
    nuclei_pred, cell_pred = inputs["nuclei_pred"], inputs["cell_pred"]
    return Case(request.param, nuclei_pred, cell_pred, label_nuclei(nuclei_pred), *label_cell(nuclei_pred, cell_pred))


def assert_objects_match(labels: np.ndarray, expected: np.ndarray) -> None:
    """Same object count; each reference object's best IoU >= 0.95, their mean >= 0.99."""
    expected_ids, found_ids, iou = iou_table(expected, labels)
    assert len(found_ids) == len(expected_ids)
    best = iou.max(axis=1)
    assert best.min() >= 0.95, f"worst object IoU {best.min():.4f}"
    assert best.mean() >= 0.99, f"mean object IoU {best.mean():.4f}"


def test_label_nuclei_reproduces_the_reference(case):
    assert_objects_match(case.nuclei, reference(case.variant, "label_nuclei"))


def test_label_cell_reproduces_the_reference_cells(case):
    assert_objects_match(case.cells, reference(case.variant, "label_cell_cells"))


def test_label_cell_reproduces_the_reference_nuclei(case):
    assert_objects_match(case.cell_nuclei, reference(case.variant, "label_cell_nuclei"))


def test_label_cell_gives_each_nucleus_the_id_of_its_cell(case):
    inside = case.cell_nuclei > 0
    assert np.array_equal(case.cell_nuclei[inside], case.cells[inside])


def test_block_grid_shortcut_matches_full_resolution(case, monkeypatch):
    window = (slice(512, 1024), slice(512, 1024), slice(None))
    nuclei_pred, cell_pred = case.nuclei_pred[window], case.cell_pred[window]
    on_blocks = label_nuclei(nuclei_pred), *label_cell(nuclei_pred, cell_pred)
    monkeypatch.setattr(postprocess, "_block_px", lambda *images: 1)
    full = label_nuclei(nuclei_pred), *label_cell(nuclei_pred, cell_pred)
    assert np.array_equal(on_blocks[0], full[0])  # every nuclei step is exact on the block grid
    for labels, expected in zip(on_blocks[1:], full[1:], strict=True):
        assert_objects_match(labels, expected)


def test_label_cell_numbers_more_than_255_cells():
    nuclei_pred, cell_pred = grid_predictions(cells_per_side=17, cell_px=22)  # 289 cells of 88 px
    nuclei, cells = label_cell(nuclei_pred, cell_pred)
    assert cells.max() == 289
    assert len(np.unique(cells)) == 290
    assert np.array_equal(np.unique(nuclei), np.arange(290))
    assert np.array_equal(nuclei[nuclei > 0], cells[nuclei > 0])


def test_label_cell_keeps_the_uint8_wraparound_of_the_summed_borders():
    nuclei_pred, cell_pred = grid_predictions(cells_per_side=2, cell_px=22)
    # Both border maps high over the top-left nucleus: 200 + 100 wraps to 44 in uint8, a low
    # border sum, so the reference still seeds that nucleus.
    nucleus = (slice(20, 72), slice(20, 72))  # the whole top-left nucleus
    nuclei_pred[nucleus + (1,)] = 200
    cell_pred[nucleus + (1,)] = 100
    nuclei, cells = label_cell(nuclei_pred, cell_pred)
    assert cells.max() == 4
    assert nuclei[44, 44] == cells[44, 44] > 0


def test_label_nuclei_splits_touching_nuclei_along_the_predicted_border():
    side = 32
    body = np.zeros((side, side), dtype=np.uint8)
    body[8:24, 4:28] = 240
    border = np.zeros_like(body)
    border[8:24, 15:17] = 200  # a touching border down the middle
    body[8:24, 15:17] = 40
    nuclei = label_nuclei(blocky(np.stack([np.zeros_like(body), border, body], axis=-1)))
    assert nuclei.max() == 2
    assert (nuclei[64, 20], nuclei[64, 100]) == (1, 2)


def test_predictions_without_objects_give_empty_labels():
    empty = np.zeros((64, 64, 3), dtype=np.uint8)
    nuclei, cells = label_cell(empty, empty)
    assert not label_nuclei(empty).any() and not nuclei.any() and not cells.any()


@pytest.mark.parametrize(
    "prediction",
    [
        np.zeros((64, 64), dtype=np.uint8),
        np.zeros((64, 64, 4), dtype=np.uint8),
        np.zeros((64, 64, 3), dtype=np.float32),
    ],
)
def test_label_nuclei_rejects_what_is_not_a_uint8_3_channel_map(prediction):
    with pytest.raises(ValueError, match=r"nuclei_pred must be a uint8 array of shape \(H, W, 3\)"):
        label_nuclei(prediction)


def test_label_cell_rejects_predictions_of_different_fields():
    with pytest.raises(ValueError, match="pass the two predictions of the same field"):
        label_cell(np.zeros((64, 64, 3), np.uint8), np.zeros((64, 32, 3), np.uint8))
