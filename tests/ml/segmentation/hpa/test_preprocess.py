import numpy as np
import pytest

from ml.segmentation.hpa.preprocess import MEAN, PAD_PX, STD, input_channels, prepare_input, restore_prediction
from tests.ml.segmentation.support import random_field


@pytest.mark.parametrize("size_px, network_px", [(1728, 480), (2048, 576), (200, 96)])
def test_input_is_scaled_by_a_quarter_and_padded_to_a_multiple_of_32(size_px, network_px):
    plane = np.full((size_px, size_px), 0.5, dtype=np.float32)
    network_input = prepare_input([plane, plane, plane])
    assert network_input.image.shape == (3, network_px, network_px)
    assert network_input.scaled_shape == (round(size_px / 4), round(size_px / 4))
    expected = [(0.5 - mean) / std for mean, std in zip(MEAN, STD, strict=True)]
    assert np.allclose(network_input.image[:, 0, 0], expected, atol=1e-6)


def test_padding_mirrors_with_the_edge_pixel_repeated():
    ramp = np.tile(np.arange(256, dtype=np.float32) / 255, (256, 1))  # columns 0..1
    image = prepare_input([ramp, ramp, ramp], mean=(0, 0, 0), std=(1, 1, 1)).image[0]
    inside = image[PAD_PX, PAD_PX : PAD_PX + 64]
    assert np.array_equal(image[PAD_PX, PAD_PX - 3 : PAD_PX][::-1], inside[:3])  # cba|abc
    assert np.array_equal(image[PAD_PX, PAD_PX + 64 : PAD_PX + 67], inside[-3:][::-1])


def test_restored_maps_replicate_each_network_pixel_without_transposing():
    plane = np.zeros((64, 32), dtype=np.float32)
    network_input = prepare_input([plane, plane, plane])
    probabilities = np.random.default_rng(1).dirichlet((1, 1, 1), size=network_input.image.shape[1:]).transpose(2, 0, 1)
    for kind in ("nuclei", "cell"):
        restored = restore_prediction(probabilities.astype(np.float32), network_input=network_input, kind=kind)
        assert restored.shape == (64, 32, 3) and restored.dtype == np.uint8
        assert not restored[..., 0].any()
        expected = np.rint(probabilities[2, PAD_PX, PAD_PX] * 255)
        assert (restored[:4, :4, 2] == expected).all()


def test_cell_network_channels_fall_back_when_red_or_yellow_is_missing():
    assert input_channels(random_field(32), kind="cell") == (("red", "yellow", "blue"), ("blue", "red", "yellow"))
    assert input_channels(random_field(32, red=False), kind="cell") == (
        ("yellow", "yellow", "blue"),
        ("blue", "yellow"),
    )
    assert input_channels(random_field(32, red=False, yellow=False), kind="cell") == (
        ("green", "green", "blue"),
        ("blue", "green"),
    )
    assert input_channels(random_field(32, red=False), kind="nuclei") == (("blue", "blue", "blue"), ("blue",))
