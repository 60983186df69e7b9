import numpy as np
import pytest
import torch

from ml.crops import cell_boxes, crop_cells, normalize_crops


def constant_stack(shape: tuple[int, int]) -> np.ndarray:
    """Channel c holds the value c + 1 everywhere."""
    return np.stack([np.full(shape, channel + 1, dtype=np.float32) for channel in range(4)])


def test_cell_boxes_lists_ids_half_open_boxes_and_areas():
    labels = np.zeros((6, 8), dtype=np.uint16)
    labels[1:3, 2:6] = 1
    labels[4:6, 0:1] = 3
    cell_ids, bboxes, areas_px = cell_boxes(labels)
    np.testing.assert_array_equal(cell_ids, [1, 3])
    np.testing.assert_array_equal(bboxes, [[1, 2, 3, 6], [4, 0, 6, 1]])
    np.testing.assert_array_equal(areas_px, [8, 2])


def test_crop_cells_zeroes_neighbours_and_background():
    labels = np.zeros((8, 8), dtype=np.uint16)
    labels[0:4, 0:4] = 1
    labels[0:2, 0:2] = 2  # a neighbour inside cell 1's box
    labels[0, 3] = 0  # background inside cell 1's box
    crops = crop_cells(constant_stack((8, 8)), labels, size_px=4)  # box 4 x 4: no resampling
    expected_mask = np.array([[0, 0, 1, 0], [0, 0, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]], dtype=np.float32)
    for channel in range(4):
        np.testing.assert_array_equal(crops.images[0, channel], (channel + 1) * expected_mask)


def test_crop_cells_centres_a_wide_cell_in_a_square():
    labels = np.zeros((20, 30), dtype=np.uint16)
    labels[5:15, 3:23] = 1  # 10 rows x 20 columns
    crops = crop_cells(constant_stack((20, 30)), labels, size_px=20)
    expected_rows = np.zeros(20, dtype=np.float32)
    expected_rows[5:15] = 1
    np.testing.assert_array_equal(crops.images[0, 0], np.repeat(expected_rows[:, None], 20, axis=1))


def test_crop_cells_shrinks_a_uniform_cell_to_the_same_intensity():
    labels = np.zeros((100, 100), dtype=np.uint16)
    labels[10:90, 10:90] = 1
    crops = crop_cells(constant_stack((100, 100)) / 8, labels, size_px=16)
    assert crops.images.shape == (1, 4, 16, 16)
    np.testing.assert_allclose(crops.images[0, :, 8, 8], [0.125, 0.25, 0.375, 0.5], atol=1e-6)
    np.testing.assert_allclose(crops.images[0].mean(axis=(1, 2)), [0.125, 0.25, 0.375, 0.5], atol=1e-6)


def test_crop_cells_returns_geometry_of_each_cell(drawn_field):
    crops = crop_cells(drawn_field.field.stack(), drawn_field.cell_labels, size_px=32)
    assert len(crops) == 3
    np.testing.assert_array_equal(crops.cell_ids, [1, 2, 3])
    np.testing.assert_array_equal(crops.bboxes[0], [15, 15, 106, 106])  # disk of radius 45 around (60, 60)
    areas_px = [np.count_nonzero(drawn_field.cell_labels == label) for label in (1, 2, 3)]
    np.testing.assert_array_equal(crops.areas_px, areas_px)
    assert crops.images.shape == (3, 4, 32, 32) and crops.images.dtype == np.float32


def test_crop_cells_handles_a_field_without_cells():
    crops = crop_cells(constant_stack((16, 16)), np.zeros((16, 16), dtype=np.uint16), size_px=8)
    assert len(crops) == 0
    assert crops.images.shape == (0, 4, 8, 8)
    assert crops.bboxes.shape == (0, 4)


def test_crop_cells_rejects_labels_of_another_shape():
    with pytest.raises(ValueError, match="does not match cell labels"):
        crop_cells(constant_stack((16, 16)), np.zeros((16, 15), dtype=np.uint16))


def test_crop_cells_crops_every_cell_of_a_2048_field():
    # Speed is measured by `make bench` (crops stage), not here.
    rows, cols = np.mgrid[:2048, :2048]
    labels = np.zeros((2048, 2048), dtype=np.uint16)
    centres = [(row, col) for row in range(150, 2048, 350) for col in range(150, 2048, 350)][:30]
    for label, (row, col) in enumerate(centres, start=1):
        labels[np.hypot(rows - row, cols - col) <= 160] = label
    stack = np.random.default_rng(0).random((4, 2048, 2048), dtype=np.float32)
    crops = crop_cells(stack, labels, size_px=128)
    assert crops.images.shape == (30, 4, 128, 128)
    assert list(crops.cell_ids) == list(range(1, 31))


def test_normalize_crops_subtracts_mean_and_divides_by_std_per_channel():
    images = torch.ones(2, 4, 3, 3)
    normalized = normalize_crops(images, mean=[0.0, 0.5, 1.0, 2.0], std=[1.0, 0.5, 2.0, 4.0])
    torch.testing.assert_close(normalized[1, :, 2, 2], torch.tensor([1.0, 1.0, 0.0, -0.25]))
