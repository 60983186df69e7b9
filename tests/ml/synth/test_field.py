import numpy as np
import pytest

from ml.constants import CHANNELS
from ml.synth import synthesize_field
from tests.ml.synth.support import SIZE_PX, field


def test_synthesize_field_is_deterministic_for_a_seed():
    first, second = field(3), field(3)
    np.testing.assert_array_equal(first.image, second.image)
    np.testing.assert_array_equal(first.cell_labels, second.cell_labels)
    assert first.cell_classes == second.cell_classes
    assert not np.array_equal(first.image, field(4).image)


def test_synthesize_field_labels_cells_consecutively_with_nucleus_inside_its_cell():
    result = field(5)
    assert result.image.shape == (len(CHANNELS), SIZE_PX, SIZE_PX)
    assert result.image.dtype == np.float32
    assert result.image.min() >= 0.0 and result.image.max() <= 1.0
    ids = np.unique(result.cell_labels)
    np.testing.assert_array_equal(ids, np.arange(result.cell_count + 1))
    nucleus = result.nuclei_labels > 0
    np.testing.assert_array_equal(result.cell_labels[nucleus], result.nuclei_labels[nucleus])
    assert set(np.unique(result.nuclei_labels)) == set(ids)


def test_synthesize_field_rejects_a_size_too_small_for_cells():
    with pytest.raises(ValueError, match="too small"):
        synthesize_field(np.random.default_rng(0), 64)


def test_synthesize_field_sorts_the_image_labels_it_is_given():
    assert field(12, image_labels=(16, 0)).image_labels == (0, 16)


def test_synthesize_field_paints_reference_channels_in_every_cell():
    result = field(13)
    cells = result.cell_labels > 0
    for channel in ("red", "blue", "yellow"):
        plane = result.image[CHANNELS.index(channel)]
        assert plane[cells].mean() > 2 * plane[~cells].mean()
    blue = result.image[CHANNELS.index("blue")]
    assert blue[result.nuclei_labels > 0].mean() > 3 * blue[cells & (result.nuclei_labels == 0)].mean()
