import numpy as np
import torch

from ml.classifier.predictor import blend, pool_cells
from ml.constants import NUM_CLASSES
from ml.training import classifier as train
from tests.ml.training.support import table_of


def test_served_probabilities_mix_cell_and_field_mean_with_the_cell_weight():
    table = table_of([(0,)], [2])
    cell = np.zeros((2, NUM_CLASSES), dtype=np.float32)
    cell[:, 0] = [1.0, 0.0]
    image, final = train.served_probabilities(table, cell, pooling="mean", cell_weight=0.7)
    np.testing.assert_allclose(image[0, 0], 0.5)
    np.testing.assert_allclose(final[:, 0], [0.7 + 0.15, 0.15])


def test_served_probabilities_equal_the_predictors_pooling_and_blending_per_field():
    table = table_of([(0,), (5, 16), (14,)], [3, 1, 2])
    cell = np.random.default_rng(0).random((6, NUM_CLASSES), dtype=np.float32)
    for pooling in ("mean", "max"):
        image, final = train.served_probabilities(table, cell, pooling=pooling, cell_weight=0.6)
        for row, cells in enumerate(train.field_rows(table)):
            pooled = pool_cells(cell[cells], pooling=pooling)
            assert np.array_equal(image[row], pooled)
            assert np.array_equal(final[cells], blend(cell[cells], pooled, cell_weight=0.6))


def test_image_level_map_is_one_when_field_scores_rank_the_labels_first():
    labels = np.zeros((2, NUM_CLASSES), dtype=np.float32)
    labels[0, 0] = labels[1, 5] = 1
    scores = np.full((2, NUM_CLASSES), 0.1, dtype=np.float32)
    scores[0, 0] = scores[1, 5] = 0.9
    mean_ap, per_class = train.image_level_map(labels, scores)
    assert mean_ap == 1.0
    assert per_class[0] == 1.0 and per_class[5] == 1.0 and per_class[1] is None


def test_augment_applies_a_flip_or_quarter_turn_and_a_positive_gain_per_crop():
    images = torch.arange(3 * 4 * 5 * 5, dtype=torch.float32).reshape(3, 4, 5, 5) + 1
    out = train.augment(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    for crop, original in zip(out, images, strict=True):
        for channel in range(4):
            plane = original[channel]
            gain = crop[channel].sum() / plane.sum()
            turns = [torch.rot90(p, k) for p in (plane, plane.flip(-1)) for k in range(4)]
            assert any(torch.allclose(crop[channel], gain * t) for t in turns)
            assert 0.75 <= float(gain) <= 1.3
