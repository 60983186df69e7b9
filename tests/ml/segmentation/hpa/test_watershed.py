"""The watersheds against scikit-image's, at full resolution and from the block grid."""

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage import segmentation

from ml.segmentation.hpa import morphology, watershed
from tests.ml.segmentation.support import blocky, random_blob_labels, random_watershed_inputs


def test_watershed_with_lines_from_grid_seeds_equals_skimage_at_full_resolution():
    """label_nuclei's watershed, from the block grid: its 4-connected seeds, upsampled and eroded
    by the cross, are the reference's 8-connected eroded markers."""
    rng = np.random.default_rng(11)
    smooth = ndi.gaussian_filter(rng.random((64, 64)), 1.5)
    seeds, mask = smooth > 0.5, smooth > 0.45  # blobs, some touching diagonally
    markers, _ = ndi.label(morphology.erode_cross(blocky(seeds)), structure=np.ones((3, 3)))
    assert markers.max() > 5
    expected = segmentation.watershed(blocky(mask), markers, mask=blocky(mask), watershed_line=True)
    grid_markers, _ = ndi.label(seeds, structure=ndi.generate_binary_structure(2, 1))
    found = watershed.watershed_with_lines(mask, grid_markers, block_px=4, erode_markers=True)
    assert np.array_equal(found, expected)


def test_block_max_equals_the_maximum_of_each_block():
    random_labels = random_blob_labels()
    expected = random_labels.reshape(64, 4, 64, 4).max(axis=(1, 3))
    assert np.array_equal(watershed.block_max(random_labels, 4), expected)


@pytest.mark.parametrize("seed", [7, 8, 9])
def test_watershed_equals_skimage_watershed(seed):
    landscape, markers, mask = random_watershed_inputs(seed)
    found = watershed.watershed(landscape, markers, mask)
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
    assert np.array_equal(watershed.watershed_with_lines(mask, markers, block_px=1), expected)


def test_flood_queues_only_border_seeds_and_keeps_every_label():
    landscape, markers, mask = random_watershed_inputs(7)
    flooded = watershed.watershed_from_fronts(landscape, markers, mask)
    expected = segmentation.watershed(landscape, markers, mask=mask)
    assert np.array_equal(flooded[markers > 0], expected[markers > 0])
    assert np.array_equal(flooded > 0, expected > 0)
    assert np.count_nonzero(flooded != expected) < 0.01 * np.count_nonzero(mask)
