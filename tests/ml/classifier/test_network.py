import pytest
import torch

from ml.classifier.network import CellClassifier
from ml.constants import DEFAULT_MODEL_PATH


@pytest.mark.parametrize("size_px", [32, 96, 128])
def test_cell_classifier_gives_19_logits_per_crop(size_px):
    model = CellClassifier(widths=(8, 16, 32)).eval()
    with torch.inference_mode():
        logits = model(torch.rand(3, 4, size_px, size_px))
    assert logits.shape == (3, 19)
    assert torch.isfinite(logits).all()


def test_default_cell_classifier_weighs_under_5_mb():
    model = CellClassifier()
    size_bytes = sum(tensor.numel() * tensor.element_size() for tensor in model.state_dict().values())
    assert size_bytes < 5_000_000


def test_cell_classifier_stacks_one_stage_per_width():
    model = CellClassifier(widths=(8, 16, 24), num_classes=5)
    assert len(model.stages) == 3
    assert model.head.in_features == 24 and model.head.out_features == 5


def test_cell_classifier_is_deterministic_in_eval_mode():
    model = CellClassifier(widths=(8, 16), dropout=0.5).eval()
    crops = torch.rand(2, 4, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(model(crops), model(crops), rtol=0, atol=0)


def test_features_then_classify_equal_forward_bit_for_bit():
    model = CellClassifier(widths=(8, 16, 32), dropout=0.5).eval()
    crops = torch.rand(5, 4, 48, 48).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        features = model.features(crops)
        assert features.shape == (5, 32) and model.feature_size == 32
        assert torch.equal(model.classify(features), model(crops))


def test_pooled_layers_are_every_blocks_pooled_output_from_the_same_pass():
    model = CellClassifier(widths=(8, 16, 32), dropout=0.5).eval()
    crops = torch.rand(5, 4, 48, 48).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        pooled = model.pooled_layers(crops)
        assert list(pooled) == list(model.layer_names) == ["stem", "stage1", "stage2", "stage3"]
        assert {name: tuple(layer.shape) for name, layer in pooled.items()} == {
            "stem": (5, 8), "stage1": (5, 8), "stage2": (5, 16), "stage3": (5, 32)
        }  # fmt: skip
        assert model.layer_sizes == {"stem": 8, "stage1": 8, "stage2": 16, "stage3": 32}
        stem = model.stem(crops)
        torch.testing.assert_close(pooled["stem"], stem.mean(dim=(2, 3)), rtol=1e-6, atol=1e-7)
        assert torch.equal(pooled["stage3"], model.features(crops))
        assert list(model.pooled_layers(crops, names=("stage1",))) == ["stage1"]


def test_features_leave_the_state_dict_keys_of_the_shipped_checkpoint():
    shipped = torch.load(DEFAULT_MODEL_PATH, map_location="cpu", weights_only=True)["model"]
    assert list(CellClassifier(widths=(16, 32, 64, 128)).state_dict()) == list(shipped)
