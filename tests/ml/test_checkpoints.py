import numpy as np
import pytest
import torch

from ml.checkpoints import (
    CHECKPOINT_VERSION,
    CheckpointError,
    add_familiarity,
    first_line,
    load_classifier_checkpoint,
    load_unet_checkpoint,
    save_classifier_checkpoint,
    save_unet_checkpoint,
)
from ml.classifier.familiarity import SINGLE_LAYER_METHOD, Familiarity, fit_familiarity
from ml.classifier.network import CellClassifier
from ml.constants import CLASS_NAMES
from ml.segmentation.hpa.config import build_unet, unet_config
from tests.ml.support import TINY_CONFIG, TINY_ENCODER


def test_checkpoint_round_trip_restores_weights_and_metadata(tmp_path):
    model = CellClassifier(widths=TINY_CONFIG["widths"], dropout=0.0).eval()
    save_classifier_checkpoint(
        tmp_path / "model-a.pt", model=model, config=TINY_CONFIG, metrics={"map": 0.5}, data={"images": 7}
    )
    loaded, checkpoint = load_classifier_checkpoint(tmp_path / "model-a.pt")
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
    save_classifier_checkpoint(
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
        load_classifier_checkpoint(tmp_path / "notes.pt")


def test_load_checkpoint_rejects_a_whole_pickled_module(tmp_path):
    torch.save(CellClassifier(widths=(8, 16)), tmp_path / "module.pt")
    with pytest.raises(CheckpointError, match="module.pt is not an hpaweb classifier checkpoint"):
        load_classifier_checkpoint(tmp_path / "module.pt")


def test_load_checkpoint_rejects_a_bare_state_dict(tmp_path):
    torch.save(CellClassifier(widths=(8, 16)).state_dict(), tmp_path / "weights.pt")
    message = r"^weights.pt is not an hpaweb classifier checkpoint \(it has no 'model' entry\)"
    with pytest.raises(CheckpointError, match=message):
        load_classifier_checkpoint(tmp_path / "weights.pt")


def test_load_checkpoint_rejects_weights_of_the_wrong_shape(tiny_checkpoint):
    checkpoint = torch.load(tiny_checkpoint, weights_only=True)
    checkpoint["config"]["widths"] = [8, 32]
    torch.save(checkpoint, tiny_checkpoint)
    message = r"^The weights in tiny-model.pt do not fit a cell classifier with widths \[8, 32\]"
    with pytest.raises(CheckpointError, match=message):
        load_classifier_checkpoint(tiny_checkpoint)


def test_load_checkpoint_rejects_another_format_version(tiny_checkpoint):
    checkpoint = torch.load(tiny_checkpoint, weights_only=True)
    checkpoint["version"] = CHECKPOINT_VERSION + 1
    torch.save(checkpoint, tiny_checkpoint)
    newer = CHECKPOINT_VERSION + 1
    message = f"^tiny-model.pt is checkpoint format version {newer}, but this hpaweb reads version {CHECKPOINT_VERSION}"
    with pytest.raises(CheckpointError, match=message):
        load_classifier_checkpoint(tiny_checkpoint)


def test_load_checkpoint_rejects_other_class_names(tiny_checkpoint):
    checkpoint = torch.load(tiny_checkpoint, weights_only=True)
    checkpoint["class_names"] = checkpoint["class_names"][:-1]
    torch.save(checkpoint, tiny_checkpoint)
    with pytest.raises(CheckpointError, match="predicts other classes than the 19 HPA classes"):
        load_classifier_checkpoint(tiny_checkpoint)


def test_load_checkpoint_names_a_nameless_checkpoint_after_its_file(tiny_checkpoint):
    checkpoint = torch.load(tiny_checkpoint, weights_only=True)
    del checkpoint["name"]
    renamed = tiny_checkpoint.with_name("renamed.pt")
    torch.save(checkpoint, renamed)
    assert load_classifier_checkpoint(renamed)[1]["name"] == "renamed"


def test_load_checkpoint_names_a_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="There is no model file at .*absent.pt"):
        load_classifier_checkpoint(tmp_path / "absent.pt")


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
        save_classifier_checkpoint(
            tmp_path / "m.pt",
            model=CellClassifier(widths=(8, 16)),
            config={**TINY_CONFIG, **change},
            metrics={},
            data={},
        )
    assert not (tmp_path / "m.pt").exists()


# Segmentation U-Net checkpoints: the same read step, their own sentences.


@pytest.fixture
def unet_checkpoint(tmp_path):
    """A tiny nuclei network and the checkpoint it was saved to."""
    torch.manual_seed(0)
    config = unet_config("nuclei", encoder=TINY_ENCODER)
    model = build_unet(config).eval()
    path = tmp_path / "nuclei-net.pt"
    save_unet_checkpoint(
        path, state_dict=model.state_dict(), config=config, metrics={"val_loss": 0.5}, source={"seed": 0}
    )
    return model, path


def test_unet_checkpoint_round_trip_restores_weights_and_metadata(unet_checkpoint):
    model, path = unet_checkpoint
    loaded, info = load_unet_checkpoint(path, kind="nuclei")
    assert not loaded.training
    image = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(image), model(image), rtol=0, atol=0)
    assert "model" not in info
    assert info == {
        "config": unet_config("nuclei", encoder=TINY_ENCODER),
        "version": CHECKPOINT_VERSION,
        "name": "nuclei-net",
        "metrics": {"val_loss": 0.5},
        "source": {"seed": 0},
    }


def test_unet_checkpoint_loads_with_weights_only(unet_checkpoint):
    _, path = unet_checkpoint
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert set(raw) == {"model", "config", "version", "name", "metrics", "source"}


def test_load_unet_checkpoint_rejects_another_format_version(unet_checkpoint):
    _, path = unet_checkpoint
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["version"] = CHECKPOINT_VERSION + 1
    torch.save(checkpoint, path)
    message = (
        f"^nuclei-net.pt is checkpoint format version {CHECKPOINT_VERSION + 1}, but this hpaweb reads version "
        f"{CHECKPOINT_VERSION}; convert or train it again with this release.$"
    )
    with pytest.raises(CheckpointError, match=message):
        load_unet_checkpoint(path, kind="nuclei")


def test_load_unet_checkpoint_names_the_missing_entry_and_how_to_get_a_checkpoint(tmp_path):
    torch.save({"model": {}, "version": CHECKPOINT_VERSION}, tmp_path / "partial.pt")
    message = r"^partial.pt is not an hpaweb segmentation checkpoint \(it has no 'config' entry\); convert the official"
    with pytest.raises(CheckpointError, match=message):
        load_unet_checkpoint(tmp_path / "partial.pt", kind="cell")


def test_load_unet_checkpoint_names_a_missing_file_and_its_network(tmp_path):
    with pytest.raises(CheckpointError, match=r"^There is no cell network weight file at .*absent\.pt; convert the"):
        load_unet_checkpoint(tmp_path / "absent.pt", kind="cell")


def test_first_line_keeps_the_first_line_or_names_the_error_type():
    assert first_line(RuntimeError("size mismatch\n\tdetails")) == "size mismatch"
    assert first_line(KeyError()) == "KeyError"


TINY_LAYER_SIZES = {"stem": 8, "stage1": 8, "stage2": 16}  # CellClassifier(widths=TINY_CONFIG["widths"])


def tiny_familiarity(layer_sizes: dict[str, int] = TINY_LAYER_SIZES) -> Familiarity:
    rng = np.random.default_rng(0)
    return fit_familiarity({name: rng.normal(size=(40, size)) for name, size in layer_sizes.items()})


def test_checkpoint_stores_its_familiarity_as_plain_data_and_loads_it_described(tmp_path):
    familiarity = tiny_familiarity()
    save_classifier_checkpoint(
        tmp_path / "m.pt",
        model=CellClassifier(widths=TINY_CONFIG["widths"]),
        config=TINY_CONFIG,
        metrics={},
        data={},
        familiarity=familiarity,
    )
    raw = torch.load(tmp_path / "m.pt", map_location="cpu", weights_only=True)
    assert raw["familiarity"] == familiarity.to_plain()
    assert raw["version"] == CHECKPOINT_VERSION == 1
    loaded = load_classifier_checkpoint(tmp_path / "m.pt")[1]["familiarity"]
    assert loaded.thresholds == familiarity.thresholds and loaded.training_cells == 40
    assert loaded.layer_sizes == TINY_LAYER_SIZES
    for restored, fitted in zip(loaded.layers, familiarity.layers, strict=True):
        np.testing.assert_array_equal(restored.covariance, fitted.covariance)


def test_a_checkpoint_without_familiarity_loads_with_none(tiny_checkpoint):
    assert "familiarity" not in torch.load(tiny_checkpoint, weights_only=True)
    assert load_classifier_checkpoint(tiny_checkpoint)[1]["familiarity"] is None


def test_a_checkpoint_with_the_earlier_single_layer_block_loads_it_as_its_last_layer(tiny_checkpoint):
    last = tiny_familiarity({"stage2": 16}).layers[0]
    checkpoint = torch.load(tiny_checkpoint, weights_only=True)
    checkpoint["familiarity"] = {
        "method": SINGLE_LAYER_METHOD,
        "feature_size": 16,
        "percentile": 99.0,
        "threshold": 7.5,
        "training_cells": 40,
        "shrinkage": last.shrinkage,
        "calibration": "each training cell measured by a description fitted without it (5 folds of cells)",
        "mean": last.mean.tolist(),
        "covariance": last.covariance.tolist(),
        "distance_quantiles": last.distance_quantiles.tolist(),
    }
    torch.save(checkpoint, tiny_checkpoint)
    familiarity = load_classifier_checkpoint(tiny_checkpoint)[1]["familiarity"]
    assert familiarity.layer_names == ("stage2",) and familiarity.thresholds == (7.5,)
    np.testing.assert_array_equal(familiarity.layers[0].covariance, last.covariance)


@pytest.mark.parametrize(
    ("block", "problem"),
    [
        ("close enough", "it is not a mapping"),
        ({"method": SINGLE_LAYER_METHOD}, "feature_size, percentile, threshold, .* missing"),
        (
            tiny_familiarity({"stem": 8, "stage1": 4}).to_plain(),
            "it describes 4 features in layer stage1, the model gives 8",
        ),
        (
            tiny_familiarity({"stage3": 16}).to_plain(),
            r"it describes layer 'stage3', which the model does not have \(stem, stage1, stage2\)",
        ),
        ({**tiny_familiarity().to_plain(), "percentile": "high"}, "a value has the wrong type"),
    ],
)
def test_load_checkpoint_rejects_a_malformed_familiarity_block_with_a_sentence(tiny_checkpoint, block, problem):
    checkpoint = torch.load(tiny_checkpoint, weights_only=True)
    checkpoint["familiarity"] = block
    torch.save(checkpoint, tiny_checkpoint)
    message = (
        f"^tiny-model.pt has an unusable familiarity block: {problem}; fit it again with "
        r"`python -m ml fit-familiarity --model CKPT --data DIR` \(the model's training data\).$"
    )
    with pytest.raises(CheckpointError, match=message):
        load_classifier_checkpoint(tiny_checkpoint)


def test_add_familiarity_keeps_the_weights_and_everything_else(tiny_checkpoint, tmp_path):
    before = torch.load(tiny_checkpoint, weights_only=True)
    add_familiarity(tiny_checkpoint, familiarity=tiny_familiarity(), out=tmp_path / "described.pt")
    after = torch.load(tmp_path / "described.pt", weights_only=True)
    assert list(after["model"]) == list(before["model"])
    assert all(torch.equal(after["model"][key], tensor) for key, tensor in before["model"].items())
    assert {k: v for k, v in after.items() if k not in ("model", "familiarity")} == {
        k: v for k, v in before.items() if k != "model"
    }
    assert "familiarity" not in torch.load(tiny_checkpoint, weights_only=True)


def test_add_familiarity_refuses_a_description_of_other_features(tiny_checkpoint):
    with pytest.raises(CheckpointError, match="it describes 4 features in layer stage2, the model gives 16"):
        add_familiarity(tiny_checkpoint, familiarity=tiny_familiarity({"stage2": 4}))
    assert "familiarity" not in torch.load(tiny_checkpoint, weights_only=True)


def test_backbone_checkpoint_round_trip_rebuilds_the_timm_network_and_its_preprocessing(tmp_path):
    from ml.checkpoints import BACKBONE_ARCHITECTURE, PREPROCESSING
    from ml.classifier.network import BackboneCellClassifier
    from ml.classifier.predictor import Predictor

    model = BackboneCellClassifier("efficientnet_lite0", dropout=0.0).eval()
    config = {**TINY_CONFIG, "architecture": BACKBONE_ARCHITECTURE, "backbone": "efficientnet_lite0", "widths": []}
    config["preprocessing"] = PREPROCESSING
    save_classifier_checkpoint(tmp_path / "b.pt", model=model, config=config, metrics={}, data={})
    loaded, checkpoint = load_classifier_checkpoint(tmp_path / "b.pt")
    crops = torch.rand(2, 4, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(crops), model(crops), rtol=0, atol=0)
    assert isinstance(loaded, BackboneCellClassifier) and checkpoint["config"]["backbone"] == "efficientnet_lite0"
    predictor = Predictor.from_checkpoint(tmp_path / "b.pt", device="cpu")
    assert predictor.description.architecture == BACKBONE_ARCHITECTURE and predictor.input_size_px == 32
    probabilities, layers = predictor.predict_crops_and_features(crops.numpy(), layers=["stage2", "features"])
    assert (
        probabilities.shape == (2, 19) and layers["stage2"].shape == (2, 24) and layers["features"].shape == (2, 1280)
    )


def test_checkpoints_of_unknown_backbones_or_preprocessing_are_refused(tmp_path):
    from ml.checkpoints import BACKBONE_ARCHITECTURE

    model = CellClassifier(widths=TINY_CONFIG["widths"])
    for config, problem in (
        ({**TINY_CONFIG, "architecture": BACKBONE_ARCHITECTURE, "backbone": "nonet"}, "backbone 'nonet' is not a timm"),
        ({**TINY_CONFIG, "preprocessing": {"crop": "whole-field"}}, "preprocessing {'crop': 'whole-field'} is not the one"),
    ):  # fmt: skip
        with pytest.raises(CheckpointError, match=f"^The config to save has an unusable model config: {problem}"):
            save_classifier_checkpoint(tmp_path / "x.pt", model=model, config=config, metrics={}, data={})


def test_the_shipped_checkpoint_loads_and_gives_the_outputs_it_gave_before_backbones_existed():
    model, checkpoint = load_classifier_checkpoint("ml/weights/hpaweb-synth-v1.pt")
    crops = torch.rand(3, 4, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        logits = model(crops)
    # Computed with the network code of the release before timm backbones (git HEAD c99edd5).
    assert checkpoint["config"]["architecture"] == "cell-classifier" and "preprocessing" not in checkpoint["config"]
    torch.testing.assert_close(logits.sum(), torch.tensor(-878.0384521484375), rtol=1e-6, atol=1e-3)
    expected_first = [
        22.986936569213867,
        -18.517995834350586,
        -19.766910552978516,
        -29.55241584777832,
        -20.666894912719727,
    ]
    torch.testing.assert_close(logits[0, :5], torch.tensor(expected_first), rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(
        logits[2, -3:],
        torch.tensor([3.4565482139587402, -16.43890380859375, -22.265583038330078]),
        rtol=1e-6,
        atol=1e-4,
    )
