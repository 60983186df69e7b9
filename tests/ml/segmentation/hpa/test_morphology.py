"""The pixel operations against the scikit-image / SciPy calls of the reference they replace."""

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage import filters, measure, segmentation
from skimage import morphology as skimage_morphology

from ml.segmentation.hpa import morphology
from tests.ml.segmentation.support import random_blob_labels


@pytest.fixture
def random_labels() -> np.ndarray:
    return random_blob_labels()


def test_closing_equals_skimage_closing_with_disk_6(random_labels):
    expected = skimage_morphology.closing(random_labels.astype(np.uint8), skimage_morphology.disk(6))
    assert np.array_equal(morphology.closing_disk(random_labels, 6), expected)


def test_split_and_fill_holes_equals_the_reference_fill_holes(random_labels):
    boundaries = segmentation.find_boundaries(random_labels)
    expected, _ = ndi.label(ndi.binary_fill_holes(random_labels * ~boundaries > 0))
    assert np.array_equal(morphology.split_and_fill_holes(random_labels), expected)


def test_fill_small_holes_equals_remove_small_holes(random_labels):
    mask = random_labels % 3 > 0
    expected = skimage_morphology.remove_small_holes(mask, max_size=99)  # fills holes under 100 px
    assert np.array_equal(morphology.fill_small_holes(mask, 100, block_px=1), expected)


def test_relabel_in_raster_order_equals_measure_label():
    smooth = ndi.gaussian_filter(np.random.default_rng(7).random((256, 256)), 6)
    blobs, count = ndi.label(smooth > np.quantile(smooth, 0.45))
    new_ids = np.concatenate([[0], np.random.default_rng(3).permutation(count) + 1])
    shuffled = new_ids[blobs]
    assert np.array_equal(morphology.relabel_in_raster_order(shuffled), measure.label(shuffled))


def test_otsu_from_counts_equals_threshold_otsu_of_the_float_image():
    image = (np.random.default_rng(5).beta(2, 5, (200, 300)) * 255).astype(np.uint8)
    assert morphology.otsu_of_uint8(image) == filters.threshold_otsu(image / 255)


def test_split_and_fill_holes_without_holes_only_splits():
    labels = np.zeros((40, 60), dtype=np.int32)
    labels[5:30, 5:25], labels[5:30, 25:50] = 1, 2  # two touching cells, nothing enclosed
    expected, _ = ndi.label(labels * ~segmentation.find_boundaries(labels) > 0)
    assert expected.max() == 2
    assert np.array_equal(morphology.split_and_fill_holes(labels), expected)


def test_split_and_fill_holes_can_return_the_filled_mask(random_labels):
    boundaries = segmentation.find_boundaries(random_labels)
    expected = ndi.binary_fill_holes(random_labels * ~boundaries > 0)
    assert np.array_equal(morphology.split_and_fill_holes(random_labels, labelled=False), expected)


def test_relabel_in_raster_order_drops_small_labels_as_remove_small_objects(random_labels):
    expected = measure.label(skimage_morphology.remove_small_objects(random_labels, max_size=299))  # drops < 300 px
    assert np.array_equal(morphology.relabel_in_raster_order(random_labels, min_area_px=300), expected)
    assert morphology.relabel_in_raster_order(random_labels, min_area_px=300).max() < random_labels.max()


@pytest.mark.parametrize("label_count", [39, 300])
def test_label_areas_equal_bincount(label_count):
    labels = np.random.default_rng(4).integers(0, label_count + 1, (64, 96)).astype(np.int32)
    labels[0, 0] = label_count
    for image in (labels, labels[::3, :-1]):  # contiguous, and a strided view
        expected = np.bincount(image.ravel(), minlength=label_count + 1)
        assert np.array_equal(morphology.label_areas(image, label_count), expected)
