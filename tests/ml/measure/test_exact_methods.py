"""The faster methods of `ml.measure` give the values of the library calls they stand for."""

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import ConvexHull
from skimage.feature import local_binary_pattern
from skimage.measure import perimeter

from ml.measure.intensity import _bin_means
from ml.measure.shape import _convex_area, _euler_number, _hole_area, _perimeter, erode, pixel_rows_cols
from ml.measure.texture import _nri_uniform_lbp, compiled_lbp, lbp_histogram


def _images(seed: int, count: int):
    rng = np.random.default_rng(seed)
    for index in range(count):
        height, width = (int(side) for side in rng.integers(3, 70, 2))
        kind = index % 3
        if kind == 0:
            yield rng, rng.integers(0, 256, (height, width)).astype(np.uint8)
        elif kind == 1:  # few grey levels: ties between the centre and its neighbours
            yield rng, (rng.integers(0, 3, (height, width)) * 7).astype(np.uint8)
        else:
            yield rng, ((rng.random((height, width)) < 0.5) * int(rng.integers(1, 256))).astype(np.uint8)


def test_lbp_codes_are_scikit_images_over_any_box():
    for rng, image in _images(0, 60):
        expected = local_binary_pattern(image, 16, 2, method="nri_uniform")
        height, width = image.shape
        top, left = int(rng.integers(0, height)), int(rng.integers(0, width))
        bottom, right = int(rng.integers(top + 1, height + 1)), int(rng.integers(left + 1, width + 1))
        assert np.array_equal(_nri_uniform_lbp(image, (top, bottom, left, right)), expected[top:bottom, left:right])


def test_the_compiled_lbp_is_built():
    assert compiled_lbp() is not None, "ml/measure/_lbp.so is missing: run `make venv`"


@pytest.mark.parametrize("compiled", [True, False], ids=["_lbp.c", "numpy"])
def test_lbp_histogram_is_scikit_images_codes_counted_over_the_mask(compiled):
    for rng, image in [*_images(1, 30), *_crop_sized_images(2, 6)]:
        mask = rng.random(image.shape) < rng.uniform(0.05, 1.0)
        if not mask.any():
            continue
        codes = local_binary_pattern(image, 16, 2, method="nri_uniform")[mask].astype(np.int64)
        counts = np.bincount(codes, minlength=243).astype(np.float64)
        assert np.array_equal(lbp_histogram(image / 255.0, mask, compiled=compiled), counts / counts.sum())


def _crop_sized_images(seed: int, count: int):
    """Images at the texture crops' size (`TEXTURE_SIZE_PX`) and thin strips, some with flat areas."""
    rng = np.random.default_rng(seed)
    shapes = [(128, 128), (1, 128), (128, 2), (128, 97)]
    for index in range(count):
        image = rng.integers(0, 256, shapes[index % len(shapes)]).astype(np.uint8)
        if index % 2:
            image[: image.shape[0] // 2] = 40
        yield rng, image


def _masks(seed: int, count: int):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        height, width = (int(side) for side in rng.integers(2, 60, 2))
        noise = ndimage.gaussian_filter(rng.random((height, width)), float(rng.uniform(0.5, 3)))
        mask = noise > np.quantile(noise, float(rng.uniform(0.2, 0.8)))
        if mask.any():
            yield mask


def test_shape_helpers_equal_the_library_computations():
    for mask in _masks(2, 80):
        eroded = ndimage.binary_erosion(mask)
        assert np.array_equal(erode(mask), eroded)
        assert _perimeter(mask & ~eroded) == perimeter(mask, neighborhood=4)
        pieces = ndimage.label(mask, structure=np.ones((3, 3)))[1]
        holes = ndimage.label(np.pad(~mask, 1, constant_values=True))[1] - 1
        assert _euler_number(mask) == pieces - holes
        assert (_hole_area(mask) > 0) == (holes > 0)
        rows, cols = np.nonzero(mask & ~eroded)
        corners = np.concatenate([np.stack([rows + dr, cols + dc], 1) for dr in (-0.5, 0.5) for dc in (-0.5, 0.5)])
        if np.ptp(corners[:, 0]) > 0 and np.ptp(corners[:, 1]) > 0:
            assert _convex_area(mask, float(mask.sum())) == pytest.approx(ConvexHull(corners).volume, rel=1e-12)


def test_bin_means_equal_numpys_block_mean():
    rng = np.random.default_rng(3)
    for _ in range(20):
        rows, cols = (int(side) * 2 for side in rng.integers(1, 40, 2))
        window = rng.random((rows + 1, cols + 1)).astype(np.float32)[:rows, :cols]
        expected = window.reshape(rows // 2, 2, cols // 2, 2).mean(axis=(1, 3), dtype=np.float32)
        assert np.array_equal(_bin_means(window), expected)


def _intensity_cases(seed: int):
    """(windows, mask, nucleus, levels) over small and large cells, odd and even pixel counts, for pixels
    read from 8- and 16-bit files (`ml.io`'s k / levels), such pixels rescaled, and float data."""
    from ml.constants import CHANNELS

    rng = np.random.default_rng(seed)
    for index in range(48):
        low, high = ((4, 40), (50, 160))[index % 2]  # below and above the histogram's minimum size
        height, width = (int(side) for side in rng.integers(low, high, 2))
        mask = rng.random((height, width)) < 0.7
        mask[0, 0] = True
        bits = (8, 16)[index // 2 % 2]
        levels = (1 << bits) - 1
        top = int(rng.choice([3, 235, levels]))  # few grey levels, a dim 16-bit field, the full range
        windows = {}
        for channel in CHANNELS:
            pixels = rng.integers(0, top + 1, (height, width)).astype(np.uint16 if bits == 16 else np.uint8)
            windows[channel] = pixels.astype(np.float32) / np.float32(levels)
        kind = index // 4 % 3
        if kind == 1:  # rescaled (as `normalise_range` does): not k / levels any more
            windows["green"] = windows["green"] * np.float32(1.7) - np.float32(0.01)
        elif kind == 2:  # float data
            windows["red"] = rng.random((height, width)).astype(np.float32)
        yield windows, mask, mask & (rng.random((height, width)) < 0.3), levels


def test_intensity_statistics_equal_numpys_on_odd_and_even_cells():
    from ml.constants import CHANNELS
    from ml.measure.intensity import STATISTICS, intensity_features

    for index, (windows, mask, nucleus, levels) in enumerate(_intensity_cases(5)):
        for given_levels in (levels, None):
            features = intensity_features(windows, mask, nucleus, levels=given_levels)
            for position, channel in enumerate(CHANNELS):
                inside = windows[channel][mask]
                stats = features[position * len(STATISTICS) : (position + 1) * len(STATISTICS)]
                mean, median, std, largest, total = stats
                where = (index, channel, inside.size, given_levels)
                assert median == float(np.median(inside)), where
                assert largest == float(inside.max()), where
                assert total == float(inside.sum(dtype=np.float64)), where
                assert mean == float(inside.mean(dtype=np.float64)), where
                assert std == pytest.approx(float(np.std(inside, dtype=np.float64)), rel=1e-12, abs=1e-15), where
            green = windows["green"][mask].astype(np.float64)
            for offset, reference in enumerate(("red", "blue", "yellow")):
                correlation = features[len(CHANNELS) * len(STATISTICS) + 1 + offset]
                assert correlation == pytest.approx(np.corrcoef(green, windows[reference][mask])[0, 1], rel=1e-9)


def test_median_from_levels_takes_the_histogram_only_where_it_gives_every_pixel_back(monkeypatch):
    """Pixels of a file take the histogram; rescaled ones the partial sort (the same median either way)."""
    from ml.measure import intensity

    sorted_sizes = []
    partition = np.partition
    monkeypatch.setattr(
        intensity.np, "partition", lambda values, kth: sorted_sizes.append(values.size) or partition(values, kth)
    )
    pixels = np.random.default_rng(6).integers(0, 256, 5001).astype(np.float32) / np.float32(255)
    assert intensity._median_and_max(pixels, 255) == (float(np.median(pixels)), float(pixels.max()))
    assert sorted_sizes == []
    rescaled = pixels * np.float32(0.999)
    assert intensity._median_and_max(rescaled, 255) == (float(np.median(rescaled)), float(rescaled.max()))
    assert sorted_sizes == [5001]


def test_pixel_rows_cols_are_np_nonzero_of_the_mask():
    rng = np.random.default_rng(5)
    for height, width in ((1, 1), (7, 13), (300, 331)):
        mask = rng.random((height, width)) < 0.4
        rows, cols = pixel_rows_cols(np.flatnonzero(mask), width)
        expected_rows, expected_cols = np.nonzero(mask)
        assert np.array_equal(rows, expected_rows) and np.array_equal(cols, expected_cols)
