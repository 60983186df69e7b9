import numpy as np
import pytest
import torch

from ml.checkpoints import load_classifier_checkpoint
from ml.classifier.network import CellClassifier
from ml.classifier.predictor import blend, pool_cells
from ml.constants import NUM_CLASSES
from ml.crops import normalize_crops
from ml.io import InputError
from ml.segmentation import Segmenter
from ml.synth import write_dataset
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


MEAN, STD = [0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8]


def random_table(cells: int):
    table = table_of([(0,), (3,)], [cells // 2, cells - cells // 2])
    crops = np.random.default_rng(cells).integers(0, 256, size=(cells, 4, 32, 32), dtype=np.uint8)
    return type(table)(table.image_ids, table.image_labels, crops, table.field_index, table.cell_ids)


def test_predict_layer_features_are_the_networks_pooled_layers_of_the_crops():
    model = CellClassifier(widths=(8, 16)).eval()
    table = random_table(5)
    cpu = torch.device("cpu")
    layers = train.predict_layer_features(model, table.crops, device=cpu, mean=MEAN, std=STD, batch_size=2)
    with torch.inference_mode():
        crops = normalize_crops(torch.from_numpy(table.crops / np.float32(255)), mean=MEAN, std=STD)
        expected = model.pooled_layers(crops)
    assert {name: features.shape for name, features in layers.items()} == {
        "stem": (5, 8), "stage1": (5, 8), "stage2": (5, 16)
    }  # fmt: skip
    for name, features in layers.items():
        assert features.dtype == np.float32
        np.testing.assert_allclose(features, expected[name].numpy(), rtol=0, atol=1e-6)


def test_describe_training_cells_fits_the_familiarity_of_every_cell_of_the_table():
    model = CellClassifier(widths=(8, 16)).eval()
    table = random_table(30)
    familiarity = train.describe_training_cells(model, table, device=torch.device("cpu"), mean=MEAN, std=STD)
    layers = train.predict_layer_features(model, table.crops, device=torch.device("cpu"), mean=MEAN, std=STD)
    assert familiarity.training_cells == 30 and familiarity.layer_sizes == {"stem": 8, "stage1": 8, "stage2": 16}
    for layer in familiarity.layers:
        np.testing.assert_allclose(layer.mean, layers[layer.name].astype(np.float64).mean(axis=0), rtol=1e-12)
    assert (
        familiarity.calibration == "each training cell measured by a description fitted without it (5 folds of cells)"
    )


def test_describe_training_cells_needs_two_cells():
    message = r"^The fields give 1 cell\(s\); describing the training cells needs at least 3"
    with pytest.raises(InputError, match=message):
        train.describe_training_cells(
            CellClassifier(widths=(8, 16)), random_table(1), device=torch.device("cpu"), mean=MEAN, std=STD
        )


@pytest.mark.slow
def test_train_saves_the_familiarity_of_its_training_cells_with_the_final_model(tmp_path):
    data = tmp_path / "data"
    write_dataset(data, n_images=4, seed=5, size_px=512, bit_depth=8)
    config = train.TrainConfig(
        data_dir=data, out=tmp_path / "m.pt", size_px=32, epochs=1, refine_rounds=0, widths=(8, 8, 16, 16),
        val_fraction=0.5, device="cpu",
    )  # fmt: skip
    train.train(config, segmenter=Segmenter("classical"))
    model, checkpoint = load_classifier_checkpoint(config.out)
    familiarity = checkpoint["familiarity"]
    assert familiarity.training_cells == checkpoint["data"]["training_cells"]
    assert familiarity.layer_sizes == {"stem": 8, "stage1": 8, "stage2": 8, "stage3": 16, "stage4": 16}
    assert familiarity.percentile == 99.0
    assert torch.load(config.out, weights_only=True)["familiarity"]["method"] == "mahalanobis-layers-min-p"
