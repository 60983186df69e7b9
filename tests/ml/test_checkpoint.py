import numpy as np
import pytest
import torch

from ml.checkpoints import CHECKPOINT_VERSION, CheckpointError, load_checkpoint, save_checkpoint
from ml.constants import CLASS_NAMES
from ml.classifier.network import CellClassifier
from tests.ml.support import TINY_CONFIG


def test_checkpoint_round_trip_restores_weights_and_metadata(tmp_path):
    model = CellClassifier(widths=TINY_CONFIG["widths"], dropout=0.0).eval()
    save_checkpoint(tmp_path / "model-a.pt", model=model, config=TINY_CONFIG, metrics={"map": 0.5}, data={"images": 7})
    loaded, checkpoint = load_checkpoint(tmp_path / "model-a.pt")
    assert not loaded.training
    crops = torch.rand(2, 4, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(crops), model(crops), rtol=0, atol=0)
    assert "model" not in checkpoint
    assert checkpoint["name"] == "model-a"
    assert checkpoint["version"] == CHECKPOINT_VERSION
    assert checkpoint["config"] == TINY_CONFIG
    assert checkpoint["class_names"] == list(CLASS_NAMES)
    assert checkpoint["mean"] == TINY_CONFIG["mean"] and checkpoint["std"] == TINY_CONFIG["std"]
    assert checkpoint["metrics"] == {"map": 0.5} and checkpoint["data"] == {"images": 7}


def test_checkpoint_stores_numpy_metadata_as_plain_data(tmp_path):
    config = {**TINY_CONFIG, "widths": (8, 16), "mean": np.array([0.1, 0.2, 0.3, 0.4])}
    save_checkpoint(
        tmp_path / "m.pt",
        model=CellClassifier(widths=(8, 16)),
        config=config,
        metrics={"per_class_ap": np.arange(3, dtype=np.float32) / 4, "map": np.float64(0.25)},
        data={"source": tmp_path},
        name="readable name",
    )
    raw = torch.load(tmp_path / "m.pt", map_location="cpu", weights_only=True)
    assert raw["name"] == "readable name"
    assert raw["config"]["widths"] == [8, 16]
    assert raw["metrics"] == {"per_class_ap": [0.0, 0.25, 0.5], "map": 0.25}
    assert raw["data"] == {"source": str(tmp_path)}


def test_load_checkpoint_rejects_a_file_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "notes.pt").write_text("these are not weights")
    message = r"^notes.pt is not an hpaweb classifier checkpoint or is damaged \(.*\); pass a checkpoint written by"
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path / "notes.pt")


def test_load_checkpoint_rejects_a_whole_pickled_module(tmp_path):
    torch.save(CellClassifier(widths=(8, 16)), tmp_path / "module.pt")
    with pytest.raises(CheckpointError, match="module.pt is not an hpaweb classifier checkpoint"):
        load_checkpoint(tmp_path / "module.pt")


def test_load_checkpoint_rejects_a_bare_state_dict(tmp_path):
    torch.save(CellClassifier(widths=(8, 16)).state_dict(), tmp_path / "weights.pt")
    message = r"^weights.pt is not an hpaweb classifier checkpoint \(it has no 'model' entry\)"
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path / "weights.pt")


def test_load_checkpoint_rejects_weights_of_the_wrong_shape(tiny_checkpoint):
    checkpoint = torch.load(tiny_checkpoint, weights_only=True)
    checkpoint["config"]["widths"] = [8, 32]
    torch.save(checkpoint, tiny_checkpoint)
    message = r"^The weights in tiny-model.pt do not fit a cell classifier with widths \[8, 32\]"
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tiny_checkpoint)


def test_load_checkpoint_rejects_another_format_version(tiny_checkpoint):
    checkpoint = torch.load(tiny_checkpoint, weights_only=True)
    checkpoint["version"] = CHECKPOINT_VERSION + 1
    torch.save(checkpoint, tiny_checkpoint)
    newer = CHECKPOINT_VERSION + 1
    message = f"^tiny-model.pt is checkpoint format version {newer}, but this hpaweb reads version {CHECKPOINT_VERSION}"
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tiny_checkpoint)


def test_load_checkpoint_rejects_other_class_names(tiny_checkpoint):
    checkpoint = torch.load(tiny_checkpoint, weights_only=True)
    checkpoint["class_names"] = checkpoint["class_names"][:-1]
    torch.save(checkpoint, tiny_checkpoint)
    with pytest.raises(CheckpointError, match="predicts other classes than the 19 HPA classes"):
        load_checkpoint(tiny_checkpoint)


def test_load_checkpoint_names_a_nameless_checkpoint_after_its_file(tiny_checkpoint):
    checkpoint = torch.load(tiny_checkpoint, weights_only=True)
    del checkpoint["name"]
    renamed = tiny_checkpoint.with_name("renamed.pt")
    torch.save(checkpoint, renamed)
    assert load_checkpoint(renamed)[1]["name"] == "renamed"


def test_load_checkpoint_names_a_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="There is no model file at .*absent.pt"):
        load_checkpoint(tmp_path / "absent.pt")


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"image_pooling": "median"}, "image_pooling 'median' is not one of mean, max"),
        ({"mean": [0.5, 0.5, 0.5]}, "mean has 3 values instead of one per channel"),
        ({"architecture": "resnet"}, "architecture 'resnet' is not 'cell-classifier'"),
        ({"blend_cell_weight": 1.5}, "blend_cell_weight 1.5 is outside 0..1"),
    ],
)
def test_save_checkpoint_refuses_an_unusable_config(tmp_path, change, problem):
    with pytest.raises(CheckpointError, match=problem):
        save_checkpoint(
            tmp_path / "m.pt",
            model=CellClassifier(widths=(8, 16)),
            config={**TINY_CONFIG, **change},
            metrics={},
            data={},
        )
    assert not (tmp_path / "m.pt").exists()
