import numpy as np
import pytest
import torch

from ml.checkpoints import load_classifier_checkpoint, save_classifier_checkpoint
from ml.classifier.familiarity import fit_familiarity
from ml.classifier.network import CellClassifier
from ml.classifier.predictor import Predictor
from ml.constants import DEFAULT_MODEL_PATH
from ml.crops import crop_cells, normalize_crops
from tests.ml.support import TINY_CONFIG


def random_crops(count: int, size_px: int = 32) -> np.ndarray:
    return np.random.default_rng(count).random((count, 4, size_px, size_px), dtype=np.float32)


def test_default_model_path_points_into_the_package_weights_folder():
    assert DEFAULT_MODEL_PATH.name == "hpaweb-synth-v1.pt"
    assert DEFAULT_MODEL_PATH.parent.name == "weights" and DEFAULT_MODEL_PATH.parent.parent.name == "ml"


def test_predictor_takes_name_input_size_and_config_from_the_checkpoint(tiny_checkpoint):
    predictor = Predictor.from_checkpoint(tiny_checkpoint, device="cpu")
    assert predictor.name == "tiny-model"
    assert predictor.input_size_px == 32
    assert predictor.config == TINY_CONFIG


def test_predict_crops_normalises_with_the_checkpoint_statistics(tiny_checkpoint):
    predictor = Predictor.from_checkpoint(tiny_checkpoint, device="cpu")
    model, _ = load_classifier_checkpoint(tiny_checkpoint)
    crops = random_crops(5)
    mean = torch.tensor(TINY_CONFIG["mean"]).view(1, 4, 1, 1)
    std = torch.tensor(TINY_CONFIG["std"]).view(1, 4, 1, 1)
    with torch.inference_mode():
        expected = torch.sigmoid(model((torch.from_numpy(crops) - mean) / std)).numpy()
    probabilities = predictor.predict_crops(crops)
    assert probabilities.shape == (5, 19) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-6)


def test_predict_crops_gives_the_same_result_in_any_batch_size(tiny_checkpoint):
    crops = random_crops(7)
    whole = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", batch_size=256).predict_crops(crops)
    batched = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", batch_size=3).predict_crops(crops)
    np.testing.assert_allclose(batched, whole, rtol=0, atol=1e-6)


def test_predict_crops_rejects_crops_of_another_size(tiny_checkpoint):
    predictor = Predictor.from_checkpoint(tiny_checkpoint, device="cpu")
    with pytest.raises(ValueError, match=r"Crops must be \(N, 4, 32, 32\) for model tiny-model, got \(2, 4, 64, 64\)"):
        predictor.predict_crops(random_crops(2, size_px=64))


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_predict_cells_blends_cell_and_pooled_image_probabilities(tmp_path, drawn_field, pooling):
    path = tmp_path / "pooled.pt"
    config = {**TINY_CONFIG, "image_pooling": pooling, "blend_cell_weight": 0.7}
    save_classifier_checkpoint(path, model=CellClassifier(widths=config["widths"]), config=config, metrics={}, data={})
    predictor = Predictor.from_checkpoint(path, device="cpu")
    crops = crop_cells(drawn_field.field.stack(), drawn_field.cell_labels, size_px=32)

    predictions = predictor.predict_cells(crops)
    cell, image, final = (
        predictions.cell_probabilities,
        predictions.image_probabilities,
        predictions.final_probabilities,
    )

    np.testing.assert_array_equal(cell, predictor.predict_crops(crops.images))
    expected_image = cell.mean(axis=0) if pooling == "mean" else cell.max(axis=0)
    np.testing.assert_allclose(image, expected_image, rtol=0, atol=1e-7)
    np.testing.assert_allclose(final, 0.7 * cell + 0.3 * expected_image, rtol=0, atol=1e-6)
    assert final.shape == (3, 19) and final.dtype == np.float32


def test_predict_cells_handles_a_field_without_cells(tiny_checkpoint):
    predictor = Predictor.from_checkpoint(tiny_checkpoint, device="cpu")
    crops = crop_cells(np.zeros((4, 16, 16), dtype=np.float32), np.zeros((16, 16), dtype=np.uint16), size_px=32)
    predictions = predictor.predict_cells(crops)
    cell, image, final = (
        predictions.cell_probabilities,
        predictions.image_probabilities,
        predictions.final_probabilities,
    )
    assert cell.shape == (0, 19) and final.shape == (0, 19)
    np.testing.assert_array_equal(image, np.zeros(19, dtype=np.float32))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_predictor_on_cuda_matches_the_cpu_within_mixed_precision(tiny_checkpoint):
    crops = random_crops(9)
    on_cpu = Predictor.from_checkpoint(tiny_checkpoint, device="cpu").predict_crops(crops)
    on_gpu = Predictor.from_checkpoint(tiny_checkpoint, device="cuda").predict_crops(crops)
    np.testing.assert_allclose(on_gpu, on_cpu, rtol=0, atol=1e-2)


def test_pool_cells_takes_the_mean_or_the_max_and_gives_zeros_without_cells():
    from ml.classifier.predictor import pool_cells

    cells = np.array([[0.2] * 19, [0.6] * 19], dtype=np.float32)
    np.testing.assert_allclose(pool_cells(cells, pooling="mean"), [0.4] * 19, rtol=1e-6)
    np.testing.assert_allclose(pool_cells(cells, pooling="max"), [0.6] * 19)
    empty = pool_cells(np.zeros((0, 19), dtype=np.float32), pooling="mean")
    assert empty.dtype == np.float32 and not empty.any() and empty.shape == (19,)


def test_blend_weighs_the_cell_against_its_field_in_float32():
    from ml.classifier.predictor import blend

    final = blend(np.array([[1.0] * 19], np.float32), np.zeros(19, np.float32), cell_weight=0.7)
    assert final.dtype == np.float32
    assert final[0, 0] == np.float32(0.7)


def familiar_checkpoint(path, drawn_field) -> tuple:
    """A tiny checkpoint whose familiarity describes the drawn field's cells in every layer;
    (path, crops, familiarity, {layer name: pooled features})."""
    model = CellClassifier(widths=TINY_CONFIG["widths"], dropout=0.0).eval()
    crops = crop_cells(drawn_field.field.stack(), drawn_field.cell_labels, size_px=32)
    with torch.inference_mode():
        normalized = normalize_crops(torch.from_numpy(crops.images), mean=TINY_CONFIG["mean"], std=TINY_CONFIG["std"])
        # As the predictor runs it, so the features agree to the last bit.
        channels_last = model.to(memory_format=torch.channels_last)
        pooled = channels_last.pooled_layers(normalized.contiguous(memory_format=torch.channels_last))
        features = {name: layer.numpy() for name, layer in pooled.items()}
    familiarity = fit_familiarity({name: np.concatenate([layer, layer + 0.01]) for name, layer in features.items()})
    save_classifier_checkpoint(path, model=model, config=TINY_CONFIG, metrics={}, data={}, familiarity=familiarity)
    return path, crops, familiarity, features


def test_predict_cells_scores_familiarity_from_the_same_forward_pass(tmp_path, drawn_field):
    path, crops, familiarity, features = familiar_checkpoint(tmp_path / "familiar.pt", drawn_field)
    predictor = Predictor.from_checkpoint(path, device="cpu")

    predictions = predictor.predict_cells(crops)

    expected_scores, expected_flags = familiarity.score(features)
    assert predictions.familiarity.dtype == np.float32 and predictions.familiarity.shape == (3,)
    assert predictions.unfamiliar.dtype == bool and predictions.unfamiliar.shape == (3,)
    np.testing.assert_array_equal(predictions.familiarity, expected_scores)
    np.testing.assert_array_equal(predictions.unfamiliar, expected_flags)


def test_familiarity_leaves_the_probabilities_bit_identical(tmp_path, drawn_field):
    path, crops, _familiarity, _features = familiar_checkpoint(tmp_path / "familiar.pt", drawn_field)
    with_familiarity = Predictor.from_checkpoint(path, device="cpu")
    model, checkpoint = load_classifier_checkpoint(path)
    without = Predictor(model, {**checkpoint, "familiarity": None}, device=torch.device("cpu"))

    described, undescribed = with_familiarity.predict_cells(crops), without.predict_cells(crops)

    np.testing.assert_array_equal(described.cell_probabilities, undescribed.cell_probabilities)
    np.testing.assert_array_equal(described.final_probabilities, undescribed.final_probabilities)
    np.testing.assert_array_equal(described.cell_probabilities, with_familiarity.predict_crops(crops.images))
    assert undescribed.familiarity is None and undescribed.unfamiliar is None


def test_a_cell_unlike_the_training_cells_is_flagged_unfamiliar(tmp_path, drawn_field):
    path, crops, _familiarity, _features = familiar_checkpoint(tmp_path / "familiar.pt", drawn_field)
    predictor = Predictor.from_checkpoint(path, device="cpu")
    noise = np.random.default_rng(0).random((1, 4, 32, 32), dtype=np.float32)
    strange = type(crops)(
        images=np.concatenate([crops.images[:1], noise]),
        cell_ids=crops.cell_ids[:1].repeat(2),
        bboxes=crops.bboxes[:1].repeat(2, axis=0),
        areas_px=crops.areas_px[:1].repeat(2),
    )
    predictions = predictor.predict_cells(strange)
    assert predictions.unfamiliar.tolist() == [False, True]
    # As unusual as a cell beyond every training cell in every layer.
    farthest = predictor.familiarity.familiarity_of(np.full((1, len(predictor.familiarity.layers)), np.inf))
    assert predictions.familiarity[1] == farthest[0] < predictions.familiarity[0]


def test_predict_crops_and_features_gives_the_layers_the_description_names(tmp_path, drawn_field):
    path, crops, familiarity, features = familiar_checkpoint(tmp_path / "familiar.pt", drawn_field)
    predictor = Predictor.from_checkpoint(path, device="cpu")
    probabilities, layer_features = predictor.predict_crops_and_features(crops.images)
    assert list(layer_features) == list(familiarity.layer_names) == ["stem", *predictor.model.layer_names[1:]]
    for name, layer in layer_features.items():
        np.testing.assert_array_equal(layer, features[name])
    only, stem = predictor.predict_crops_and_features(crops.images, layers=("stem",))
    np.testing.assert_array_equal(only, probabilities)
    assert list(stem) == ["stem"] and predictor.predict_crops_and_features(crops.images, layers=())[1] == {}
