from dataclasses import replace

import numpy as np

from ml.synth import REFERENCE_SIZE_PX
from ml.synth.layout import edge_distance, normalised_radius, place_cells, rasterise, window
from tests.ml.synth.support import centred_cell, field

ROUND = np.zeros((3, 2))  # no shape harmonics: a plain ellipse


def test_synthesize_field_cuts_cells_at_the_border_and_lets_cells_touch():
    result = field(6)
    border = np.concatenate([result.cell_labels[0], result.cell_labels[-1], result.cell_labels[:, 0]])
    assert np.count_nonzero(np.unique(border)) > 0
    labels = result.cell_labels
    touching = (labels[:, 1:] != labels[:, :-1]) & (labels[:, 1:] > 0) & (labels[:, :-1] > 0)
    assert touching.any()


def test_normalised_radius_is_zero_at_the_centre_and_one_on_the_ellipse():
    ys = np.array([[50], [50], [40], [60]])
    xs = np.array([[50], [60], [50], [50]])
    rho = normalised_radius(ys, xs, (50.0, 50.0), (10.0, 5.0), 0.0, ROUND)
    np.testing.assert_allclose(rho.ravel(), [0.0, 1.0, 2.0, 2.0], atol=1e-6)


def test_normalised_radius_turns_with_the_angle():
    ys, xs = np.array([[60]]), np.array([[50]])
    rho = normalised_radius(ys, xs, (50.0, 50.0), (10.0, 5.0), np.pi / 2, ROUND)
    np.testing.assert_allclose(rho, [[1.0]], atol=1e-6)


def test_window_is_clipped_to_the_image():
    assert window((5.0, 95.0), 10.0, 100) == (slice(0, 16), slice(85, 100))


def test_place_cells_gives_a_field_labelled_with_the_spindle_dividing_cells():
    for seed in range(5):
        cells = place_cells(np.random.default_rng(seed), 512, 0.25, need_mitotic=True)
        assert sum(cell.mitotic for cell in cells) >= 1


def test_place_cells_grows_each_cell_around_its_nucleus():
    cells = place_cells(np.random.default_rng(0), 512, 0.25, need_mitotic=False)
    assert len(cells) > 5
    for cell in cells:
        assert cell.cell_radius > 1.89 * cell.nucleus_radius
        offset = np.hypot(*np.subtract(cell.nucleus_centre, cell.cell_centre))
        assert offset <= 0.25 * cell.cell_radius


def test_rasterise_keeps_a_cell_with_its_nucleus_inside():
    cell = centred_cell(size_px=512)
    cell_labels, nuclei_labels, kept = rasterise([cell], 512, 512 / REFERENCE_SIZE_PX)
    assert kept == [0]
    assert set(np.unique(cell_labels)) == {0, 1}
    nucleus = nuclei_labels == 1
    assert nucleus.any() and (cell_labels[nucleus] == 1).all()
    assert cell_labels[256, 256] == 1 and cell_labels[0, 0] == 0


def test_rasterise_drops_a_cell_whose_nucleus_lies_mostly_outside_the_image():
    inside = centred_cell(size_px=512)
    outside = replace(inside, nucleus_centre=(256.0, -10.0), cell_centre=(256.0, -10.0))
    _cell_labels, _nuclei_labels, kept = rasterise([outside, inside], 512, 512 / REFERENCE_SIZE_PX)
    assert kept == [1]


def test_rasterise_splits_overlapping_cells_along_a_shared_border():
    scale = 512 / REFERENCE_SIZE_PX
    left = centred_cell(size_px=512)
    right = replace(left, nucleus_centre=(256.0, 330.0), cell_centre=(256.0, 330.0))
    cell_labels, nuclei_labels, kept = rasterise([left, right], 512, scale)
    assert kept == [0, 1]
    row = cell_labels[256]
    assert row[256] == 1 and row[330] == 2
    assert np.count_nonzero(np.diff(row[256:331].astype(int)) == 1) == 1  # 1 meets 2 directly, no gap
    for cell_id in (1, 2):
        assert (cell_labels[nuclei_labels == cell_id] == cell_id).all()


def test_edge_distance_is_zero_on_cell_borders_and_grows_inside():
    labels = np.zeros((64, 64), dtype=np.uint16)
    labels[16:48, 16:48] = 1
    distance = edge_distance(labels)
    assert distance.shape == labels.shape and distance.dtype == np.float32
    assert distance[16, 32] <= 2.0
    assert distance[32, 32] >= 14.0
    assert distance[32, 32] > distance[24, 32] > distance[18, 32]
