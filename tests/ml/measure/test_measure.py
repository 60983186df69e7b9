import numpy as np
import pytest
from skimage.measure import regionprops

from ml.io import FieldImages
from ml.measure import measure_cells, measurement_names
from ml.measure.texture import (
    HARALICK_NAMES,
    LBP_BINS,
    SCATTERING_COEFFICIENTS,
    haralick_features,
    lbp_histogram,
    scattering_features,
    texture_crops,
)
from tests.ml.support import draw_field


def _measured(drawn, **options):
    return measure_cells(drawn.field, drawn.cell_labels, drawn.nuclei_labels, **options)


def test_measurements_have_one_row_per_cell_and_every_name():
    drawn = draw_field()
    measurements = _measured(drawn, scattering=True)
    assert list(measurements.cell_ids) == [1, 2, 3]
    assert measurements.names == measurement_names(texture=True, scattering=True)
    assert measurements.values.shape == (3, len(measurements.names))
    assert len(measurement_names(texture=False)) == 38
    assert len(measurement_names()) == 38 + len(HARALICK_NAMES) + LBP_BINS


def test_shape_matches_scikit_image_regionprops():
    drawn = draw_field()
    measurements = _measured(drawn, texture=False)
    for row, region in enumerate(regionprops(drawn.cell_labels)):
        assert measurements.column("area_px")[row] == region.area
        assert measurements.column("perimeter_px")[row] == pytest.approx(region.perimeter, abs=1e-9)
        assert measurements.column("eccentricity")[row] == pytest.approx(region.eccentricity, abs=1e-9)
        assert measurements.column("major_axis_px")[row] == pytest.approx(region.axis_major_length, abs=1e-9)
        assert measurements.column("minor_axis_px")[row] == pytest.approx(region.axis_minor_length, abs=1e-9)
        assert measurements.column("solidity")[row] == pytest.approx(region.solidity, abs=0.01)
    # Disks: round, convex, one nucleus inside, nothing on the border.
    assert np.all(measurements.column("form_factor") > 0.9)
    assert np.all(measurements.column("nucleus_pieces") == 1)
    assert np.all(measurements.column("cell_pieces") == 1)
    assert np.all(measurements.column("nucleus_outside_fraction") == 0)
    assert np.all(measurements.column("hole_area_px") == 0)
    assert np.all(measurements.column("border_px") == 0)


def test_intensity_statistics_per_channel_and_missing_channels_are_nan():
    drawn = draw_field()
    field = FieldImages(green=drawn.field.green, blue=drawn.field.blue)  # no red, no yellow
    measurements = measure_cells(field, drawn.cell_labels, drawn.nuclei_labels, texture=False)
    for row, cell_id in enumerate(measurements.cell_ids):
        inside = field.green[drawn.cell_labels == cell_id]
        assert measurements.column("green_mean")[row] == pytest.approx(inside.mean(dtype=np.float64), rel=1e-6)
        assert measurements.column("green_median")[row] == pytest.approx(np.median(inside), rel=1e-6)
        assert measurements.column("green_std")[row] == pytest.approx(inside.std(), rel=1e-5)
        assert measurements.column("green_max")[row] == pytest.approx(inside.max())
        assert measurements.column("green_integrated")[row] == pytest.approx(inside.sum(dtype=np.float64), rel=1e-6)
        nucleus = drawn.nuclei_labels == cell_id
        cytoplasm = (drawn.cell_labels == cell_id) & ~nucleus
        ratio = field.green[nucleus].mean() / field.green[cytoplasm].mean()
        assert measurements.column("green_nucleus_cytoplasm_ratio")[row] == pytest.approx(ratio, rel=1e-5)
    assert np.isnan(measurements.column("red_mean")).all() and np.isnan(measurements.column("yellow_max")).all()
    assert np.isnan(measurements.column("green_red_correlation")).all()
    assert np.isfinite(measurements.column("green_blue_correlation")).all()
    assert measurements.row_dict(0)["red_mean"] is None


def test_correlation_of_a_channel_with_its_copy_is_one():
    drawn = draw_field()
    field = FieldImages(green=drawn.field.green, blue=drawn.field.blue, red=drawn.field.green * 0.5)
    measurements = measure_cells(field, drawn.cell_labels, drawn.nuclei_labels, texture=False)
    np.testing.assert_allclose(measurements.column("green_red_correlation"), 1.0, atol=1e-6)


def test_holes_pieces_and_border_are_counted():
    drawn = draw_field()
    cells, nuclei = drawn.cell_labels.copy(), drawn.nuclei_labels.copy()
    cells[55:60, 90:95] = 0  # a 25 px hole in cell 1's cytoplasm (centre 60, 60; nucleus radius 15)
    nuclei[60, 30:35] = 1  # a second piece of cell 1's nucleus, in its cytoplasm: too small to count
    nuclei[80:90, 40:50] = 1  # a large second piece
    cells[0:3, 100:110] = 2  # a detached piece of cell 2 on the top border: 10 border px, 2 pieces
    measurements = measure_cells(drawn.field, cells, nuclei, texture=False)
    assert measurements.column("hole_area_px")[0] == 25
    assert measurements.column("nucleus_pieces")[0] == 2
    assert measurements.column("border_px")[1] == 10
    assert measurements.column("cell_pieces")[1] == 2


def test_focus_drops_when_a_cell_is_blurred():
    from scipy import ndimage

    rng = np.random.default_rng(0)
    drawn = draw_field()
    green = drawn.field.green * rng.uniform(0.5, 1.0, drawn.field.green.shape).astype(np.float32)
    blue = drawn.field.blue * rng.uniform(0.5, 1.0, drawn.field.blue.shape).astype(np.float32)
    sharp = measure_cells(FieldImages(green=green, blue=blue), drawn.cell_labels, drawn.nuclei_labels, texture=False)
    blurred = FieldImages(green=ndimage.gaussian_filter(green, 3), blue=ndimage.gaussian_filter(blue, 3))
    soft = measure_cells(blurred, drawn.cell_labels, drawn.nuclei_labels, texture=False)
    assert np.all(soft.column("focus") < 0.1 * sharp.column("focus"))


def test_lbp_histogram_has_243_bins_summing_to_one():
    rng = np.random.default_rng(1)
    green = rng.random((128, 128)).astype(np.float32)
    mask = np.zeros((128, 128), bool)
    mask[20:100, 30:110] = True
    histogram = lbp_histogram(green, mask)
    assert histogram.shape == (243,) and histogram.sum() == pytest.approx(1.0)
    flat = lbp_histogram(np.full((128, 128), 0.5, np.float32), mask)
    assert flat.max() == pytest.approx(1.0)  # a flat cell: every pixel shows one and the same pattern


def test_haralick_of_a_flat_cell_has_no_contrast():
    mask = np.zeros((128, 128), bool)
    mask[10:120, 10:120] = True
    flat = np.where(mask, 0.5, 0).astype(np.float32)
    features = dict(zip(HARALICK_NAMES, haralick_features(flat, mask), strict=True))
    assert features["contrast"] == 0 and features["ASM"] == pytest.approx(1.0) and features["entropy"] == 0
    rng = np.random.default_rng(2)
    noise = rng.random((128, 128)).astype(np.float32) * mask
    textured = dict(zip(HARALICK_NAMES, haralick_features(noise, mask), strict=True))
    assert textured["contrast"] > 10 and textured["entropy"] > 5


def test_scattering_is_the_same_alone_and_in_a_batch():
    drawn = draw_field()
    greens, masks = texture_crops(drawn.field.green, drawn.cell_labels)
    assert greens.shape == (3, 128, 128) and masks.shape == (3, 128, 128)
    together = scattering_features(greens, batch_size=2)
    alone = scattering_features(greens[2:])
    assert together.shape == (3, SCATTERING_COEFFICIENTS)
    np.testing.assert_allclose(together[2], alone[0], rtol=0, atol=1e-5)
    assert np.isfinite(together).all()


def test_measuring_a_field_without_cells_gives_no_rows():
    drawn = draw_field(centres=())
    measurements = _measured(drawn, scattering=True)
    assert len(measurements) == 0 and measurements.values.shape == (0, len(measurements.names))
