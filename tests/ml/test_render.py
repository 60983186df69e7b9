import numpy as np
import pytest
from skimage.segmentation import find_boundaries

from ml.io import FieldImages
from ml.render import composite_rgb, contrast_stretch, contrast_stretch_uint8, inner_boundaries, render_preview
from ml.segmentation import Segmentation


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_inner_boundaries_equal_skimage_find_boundaries_inner(seed):
    rng = np.random.default_rng(seed)
    # Blocky random labels with background, touching objects and objects cut by the border.
    labels = np.kron(rng.integers(0, 6, (12, 15)), np.ones((3, 2), dtype=np.int64)).astype(np.uint16)
    assert np.array_equal(inner_boundaries(labels), find_boundaries(labels, mode="inner"))


def test_contrast_stretch_uint8_maps_the_percentiles_to_0_and_255():
    image = np.random.default_rng(1).gamma(2.0, 100.0, (300, 200)).astype(np.float32)
    stretched = contrast_stretch_uint8(image)
    assert stretched.dtype == np.uint8 and stretched.min() == 0 and stretched.max() == 255
    assert np.abs(stretched.astype(int) - np.round(contrast_stretch(image) * 255).astype(int)).max() <= 1
    assert not contrast_stretch_uint8(np.full((4, 4), 7.0, np.float32)).any()


def test_composite_rgb_puts_red_green_and_blue_in_their_places_and_shrinks_to_the_maximum_side():
    zeros = np.zeros((40, 20), dtype=np.float32)
    ramp = np.tile(np.linspace(0, 1, 20, dtype=np.float32), (40, 1))
    rgb = composite_rgb(FieldImages(red=ramp, green=zeros, blue=zeros), max_side_px=20)
    assert rgb.shape == (20, 10, 3) and rgb.dtype == np.uint8
    assert not rgb[..., 1].any() and not rgb[..., 2].any()
    assert rgb[..., 0].max() > 200


def test_render_preview_draws_cell_outlines_white_and_nucleus_outlines_cyan():
    cells = np.zeros((32, 32), dtype=np.uint16)
    cells[4:28, 4:28] = 1
    nuclei = np.zeros_like(cells)
    nuclei[12:20, 12:20] = 1
    field = FieldImages(green=np.zeros((32, 32), np.float32), blue=np.zeros((32, 32), np.float32))
    segmentation = Segmentation(nuclei_labels=nuclei, cell_labels=cells, backend="fake", channels_used=("blue",))
    preview = render_preview(field, segmentation, max_side_px=32)
    assert preview[4, 10].tolist() == [255, 255, 255]
    assert preview[12, 15].tolist() == [0, 255, 255]
    assert preview[8, 8].tolist() == [0, 0, 0]
