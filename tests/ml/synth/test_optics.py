import numpy as np

from ml.synth.optics import apply_optics


def test_apply_optics_keeps_values_in_the_unit_range():
    image = np.zeros((4, 64, 64), dtype=np.float32)
    image[:, :, 32:] = 1.0
    apply_optics(np.random.default_rng(0), image, 0.25)
    assert image.dtype == np.float32
    assert image.min() >= 0.0 and image.max() <= 1.0


def test_apply_optics_gives_a_black_field_a_noisy_camera_offset():
    image = np.zeros((4, 128, 128), dtype=np.float32)
    apply_optics(np.random.default_rng(1), image, 0.25)
    for plane in image:
        assert 0.005 <= plane.mean() <= 0.03
        assert 0.004 < plane.std() < 0.02


def test_apply_optics_blurs_a_bright_point():
    image = np.zeros((1, 33, 33), dtype=np.float32)
    image[0, 16, 16] = 1.0
    apply_optics(np.random.default_rng(2), image, 1.0)
    assert image[0, 16, 16] < 0.5
    assert image[0, 16, 17] > 0.05 and image[0, 15, 16] > 0.05


def test_apply_optics_is_deterministic_for_a_seed():
    first, second = (np.full((4, 32, 32), 0.5, dtype=np.float32) for _ in range(2))
    apply_optics(np.random.default_rng(3), first, 0.5)
    apply_optics(np.random.default_rng(3), second, 0.5)
    np.testing.assert_array_equal(first, second)
