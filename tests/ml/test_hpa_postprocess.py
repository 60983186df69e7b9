from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi
from skimage import filters, measure, morphology, segmentation

from ml.segmentation import hpa_postprocess
from ml.segmentation.hpa_postprocess import label_cell, label_nuclei
from ml.segmentation.matching import iou_table

# Reference outputs of hpacellseg's label_nuclei / label_cell under scikit-image >= 0.25 (our
# 0.26), on synthetic network outputs; see README.txt there.
FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "hpacellseg" / "label_fixtures"
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
    monkeypatch.setattr(hpa_postprocess, "_block_px", lambda *images: 1)
    full = label_nuclei(nuclei_pred), *label_cell(nuclei_pred, cell_pred)
    assert np.array_equal(on_blocks[0], full[0])  # every nuclei step is exact on the block grid
    for labels, expected in zip(on_blocks[1:], full[1:]):
        assert_objects_match(labels, expected)


def blocky(image: np.ndarray) -> np.ndarray:
    """Upscale x4 by pixel replication, as predictions restored from the network's scale are."""
    return image.repeat(4, axis=0).repeat(4, axis=1)


def grid_predictions(cells_per_side: int, cell_px: int) -> tuple[np.ndarray, np.ndarray]:
    """(nuclei_pred, cell_pred) of square cells with central nuclei, separated by border lines."""
    side = cells_per_side * cell_px  # at the network's scale
    rows, cols = np.indices((side, side))
    within_row, within_col = rows % cell_px, cols % cell_px
    on_line = (within_row == 0) | (within_col == 0)
    centre = cell_px // 2
    in_nucleus = (np.abs(within_row - centre) < cell_px // 3) & (np.abs(within_col - centre) < cell_px // 3)
    nuclei_pred = np.zeros((side, side, 3), dtype=np.uint8)
    nuclei_pred[..., 2] = np.where(in_nucleus, 230, 0)
    cell_pred = np.zeros((side, side, 3), dtype=np.uint8)
    cell_pred[..., 1] = np.where(on_line, 220, 0)
    cell_pred[..., 2] = np.where(on_line, 20, 235)
    return blocky(nuclei_pred), blocky(cell_pred)


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
    [np.zeros((64, 64), dtype=np.uint8), np.zeros((64, 64, 4), dtype=np.uint8), np.zeros((64, 64, 3), dtype=np.float32)],
)
def test_label_nuclei_rejects_what_is_not_a_uint8_3_channel_map(prediction):
    with pytest.raises(ValueError, match=r"nuclei_pred must be a uint8 array of shape \(H, W, 3\)"):
        label_nuclei(prediction)


def test_label_cell_rejects_predictions_of_different_fields():
    with pytest.raises(ValueError, match="pass the two predictions of the same field"):
        label_cell(np.zeros((64, 64, 3), np.uint8), np.zeros((64, 32, 3), np.uint8))


# The shortcuts against the scikit-image / SciPy calls of the reference they replace.


@pytest.fixture
def random_labels() -> np.ndarray:
    """Touching blobs with ids up to 40 on a 256 px field, some touching the edge."""
    rng = np.random.default_rng(7)
    smooth = ndi.gaussian_filter(rng.random((256, 256)), 6)
    blobs, _ = ndi.label(smooth > np.quantile(smooth, 0.45))
    return (blobs % 40 + 1) * (blobs > 0)


def test_closing_equals_skimage_closing_with_disk_6(random_labels):
    expected = morphology.closing(random_labels.astype(np.uint8), morphology.disk(6))
    assert np.array_equal(hpa_postprocess._closing_disk(random_labels, 6), expected)


def test_split_and_fill_holes_equals_the_reference_fill_holes(random_labels):
    boundaries = segmentation.find_boundaries(random_labels)
    expected, _ = ndi.label(ndi.binary_fill_holes(random_labels * ~boundaries > 0))
    assert np.array_equal(hpa_postprocess._split_and_fill_holes(random_labels), expected)


def test_fill_small_holes_equals_remove_small_holes(random_labels):
    mask = random_labels % 3 > 0
    expected = morphology.remove_small_holes(mask, max_size=99)  # fills holes under 100 px
    assert np.array_equal(hpa_postprocess._fill_small_holes(mask, 100, block_px=1), expected)


def test_relabel_in_raster_order_equals_measure_label():
    smooth = ndi.gaussian_filter(np.random.default_rng(7).random((256, 256)), 6)
    blobs, count = ndi.label(smooth > np.quantile(smooth, 0.45))
    new_ids = np.concatenate([[0], np.random.default_rng(3).permutation(count) + 1])
    shuffled = new_ids[blobs]
    assert np.array_equal(hpa_postprocess._relabel_in_raster_order(shuffled), measure.label(shuffled))


def test_otsu_from_counts_equals_threshold_otsu_of_the_float_image():
    image = (np.random.default_rng(5).beta(2, 5, (200, 300)) * 255).astype(np.uint8)
    assert hpa_postprocess._otsu_of_uint8(image) == filters.threshold_otsu(image / 255)


def test_split_and_fill_holes_without_holes_only_splits():
    labels = np.zeros((40, 60), dtype=np.int32)
    labels[5:30, 5:25], labels[5:30, 25:50] = 1, 2  # two touching cells, nothing enclosed
    expected, _ = ndi.label(labels * ~segmentation.find_boundaries(labels) > 0)
    assert expected.max() == 2
    assert np.array_equal(hpa_postprocess._split_and_fill_holes(labels), expected)


def test_split_and_fill_holes_can_return_the_filled_mask(random_labels):
    boundaries = segmentation.find_boundaries(random_labels)
    expected = ndi.binary_fill_holes(random_labels * ~boundaries > 0)
    assert np.array_equal(hpa_postprocess._split_and_fill_holes(random_labels, labelled=False), expected)


def test_relabel_in_raster_order_drops_small_labels_as_remove_small_objects(random_labels):
    expected = measure.label(morphology.remove_small_objects(random_labels, max_size=299))  # drops < 300 px
    assert np.array_equal(hpa_postprocess._relabel_in_raster_order(random_labels, min_area_px=300), expected)
    assert hpa_postprocess._relabel_in_raster_order(random_labels, min_area_px=300).max() < random_labels.max()


def test_watershed_with_lines_from_grid_seeds_equals_skimage_at_full_resolution():
    """label_nuclei's watershed, from the block grid: its 4-connected seeds, upsampled and eroded
    by the cross, are the reference's 8-connected eroded markers."""
    rng = np.random.default_rng(11)
    smooth = ndi.gaussian_filter(rng.random((64, 64)), 1.5)
    seeds, mask = smooth > 0.5, smooth > 0.45  # blobs, some touching diagonally
    markers, _ = ndi.label(hpa_postprocess._erode_cross(blocky(seeds)), structure=np.ones((3, 3)))
    assert markers.max() > 5
    expected = segmentation.watershed(blocky(mask), markers, mask=blocky(mask), watershed_line=True)
    grid_markers, _ = ndi.label(seeds, structure=ndi.generate_binary_structure(2, 1))
    found = hpa_postprocess._watershed_with_lines(mask, grid_markers, block_px=4, erode_markers=True)
    assert np.array_equal(found, expected)


def test_block_max_equals_the_maximum_of_each_block(random_labels):
    expected = random_labels.reshape(64, 4, 64, 4).max(axis=(1, 3))
    assert np.array_equal(hpa_postprocess._block_max(random_labels, 4), expected)


def random_watershed_inputs(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(uint8 landscape with plateaus, markers, mask) on a 256 px field."""
    rng = np.random.default_rng(seed)
    smooth = ndi.gaussian_filter(rng.random((256, 256)), 6)
    mask = smooth > np.quantile(smooth, 0.4)
    markers, _ = ndi.label(smooth > np.quantile(smooth, 0.8))
    landscape = (255 * (1 - smooth / smooth.max())).astype(np.uint8) // 8 * 8
    return landscape, markers, mask


@pytest.mark.parametrize("seed", [7, 8, 9])
def test_watershed_equals_skimage_watershed(seed):
    landscape, markers, mask = random_watershed_inputs(seed)
    found = hpa_postprocess._watershed(landscape, markers, mask)
    assert found.dtype == np.int32
    assert np.array_equal(found, segmentation.watershed(landscape, markers, mask=mask))


@pytest.mark.parametrize("cropped", [False, True])
@pytest.mark.parametrize("seed", [7, 8, 9])
def test_watershed_with_lines_equals_skimage_on_a_flat_mask(seed, cropped):
    """On a flat image (label_nuclei's) the result hinges on the queue order: a mirrored field
    gives 71 other pixels, so only the same neighbour order and pushes reproduce it. A mask
    away from the edges is flooded on its bounding box."""
    _, markers, mask = random_watershed_inputs(seed)
    if cropped:
        mask[:40], mask[:, 200:] = False, False
    expected = segmentation.watershed(mask.view(np.uint8), markers, mask=mask, watershed_line=True)
    assert np.array_equal(hpa_postprocess._watershed_with_lines(mask, markers, block_px=1), expected)


def test_flood_queues_only_border_seeds_and_keeps_every_label():
    landscape, markers, mask = random_watershed_inputs(7)
    flooded = hpa_postprocess._flood(landscape, markers, mask)
    expected = segmentation.watershed(landscape, markers, mask=mask)
    assert np.array_equal(flooded[markers > 0], expected[markers > 0])
    assert np.array_equal(flooded > 0, expected > 0)
    assert np.count_nonzero(flooded != expected) < 0.01 * np.count_nonzero(mask)


def test_the_compiled_flooding_loop_is_built():
    assert hpa_postprocess._flood_library() is not None, "ml/segmentation/_flood.so is missing: run `make venv`"


@pytest.mark.parametrize("watershed_line", [False, True])
@pytest.mark.parametrize("flat", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_compiled_flooding_loop_visits_pixels_in_scikit_images_order(seed, flat, watershed_line, monkeypatch):
    """Bit-identical labels from `_flood.c` and scikit-image's own loop, seeded by every marker
    or only some (as `_flood` does), over plateaus and flat masks."""
    landscape, markers, mask = random_watershed_inputs(seed)
    heights = None if flat else hpa_postprocess._padded(landscape)
    padded_mask, labels = hpa_postprocess._padded_mask_and_markers(mask, markers)
    seeds = np.flatnonzero(labels)[:: 1 + seed % 3]
    runs = []
    for library in (hpa_postprocess._flood_library(), None):
        assert library is not None or runs, "ml/segmentation/_flood.so is missing: run `make venv`"
        monkeypatch.setattr(hpa_postprocess, "_flood_library", lambda library=library: library)
        run_labels, run_mask = labels.copy(), padded_mask.copy()
        hpa_postprocess._flood_padded(heights, run_labels, run_mask, watershed_line=watershed_line, seeds=seeds)
        runs.append((run_labels, run_mask))
    (compiled, compiled_mask), (reference, reference_mask) = runs
    assert np.count_nonzero(compiled) > np.count_nonzero(labels)
    assert np.array_equal(compiled, reference)
    assert np.array_equal(compiled_mask, reference_mask)


def test_postprocessing_without_the_compiled_loop_gives_the_same_labels(monkeypatch):
    nuclei_pred, cell_pred = grid_predictions(cells_per_side=4, cell_px=22)
    compiled = label_nuclei(nuclei_pred), *label_cell(nuclei_pred, cell_pred)
    monkeypatch.setattr(hpa_postprocess, "_flood_library", lambda: None)
    for labels, expected in zip((label_nuclei(nuclei_pred), *label_cell(nuclei_pred, cell_pred)), compiled):
        assert np.array_equal(labels, expected)


@pytest.mark.parametrize("label_count", [39, 300])
def test_label_areas_equal_bincount(label_count):
    labels = np.random.default_rng(4).integers(0, label_count + 1, (64, 96)).astype(np.int32)
    labels[0, 0] = label_count
    for image in (labels, labels[::3, :-1]):  # contiguous, and a strided view
        expected = np.bincount(image.ravel(), minlength=label_count + 1)
        assert np.array_equal(hpa_postprocess._label_areas(image, label_count), expected)
