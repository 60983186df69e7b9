import numpy as np
import pytest
import torch

from ml.checkpoints import load_classifier_checkpoint, save_classifier_checkpoint
from ml.classifier.network import CellClassifier
from ml.classifier.predictor import Predictor
from ml.constants import DEFAULT_MODEL_PATH
from ml.crops import crop_cells
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
