"""The classifier the product ships: what its checkpoint says about itself, and its score on fresh fields."""

import re
from pathlib import Path

import pytest
import torch

from ml.checkpoints import load_classifier_checkpoint
from ml.classifier.predictor import Predictor
from ml.cli import main
from ml.constants import CLASS_NAMES, DEFAULT_MODEL_PATH
from ml.encoding import read_submission
from ml.evaluate import score
from ml.synth import write_dataset

MODEL_CARD = DEFAULT_MODEL_PATH.parent / "MODEL_CARD.md"
TRAINING_SEED = 0  # `python -m ml synth --seed 0` made its training fields (MODEL_CARD.md)
QUALITY_TARGET_MAP = 0.80


def test_shipped_checkpoint_is_small_and_describes_itself():
    assert DEFAULT_MODEL_PATH.stat().st_size < 20 * 1024 * 1024
    _model, checkpoint = load_classifier_checkpoint(DEFAULT_MODEL_PATH)
    assert checkpoint["name"] == "hpaweb-synth-v1"
    assert list(checkpoint["class_names"]) == list(CLASS_NAMES)
    assert checkpoint["config"]["blend_cell_weight"] == pytest.approx(0.7)
    assert checkpoint["data"]["cell_labels"].startswith("image labels inherited by every cell")
    assert checkpoint["data"]["refine_rounds"] >= 1 and checkpoint["data"]["seed"] == TRAINING_SEED
    assert checkpoint["metrics"]["val_map"] >= QUALITY_TARGET_MAP


def test_shipped_checkpoint_describes_its_training_cells_and_carries_its_card():
    assert DEFAULT_MODEL_PATH.stat().st_size < 5 * 1024 * 1024
    raw = torch.load(DEFAULT_MODEL_PATH, map_location="cpu", weights_only=True)
    assert raw["version"] == 1 and raw["model_version"] == "1"
    assert raw["summary"] == "Trained on synthetic fields only; not validated on real images."
    assert raw["card"] == MODEL_CARD.read_text(encoding="utf-8")
    block = raw["familiarity"]
    assert (block["method"], block["percentile"]) == ("mahalanobis-layers-min-p", 99.0)
    assert block["training_cells"] >= 3000
    layers = [(layer["name"], layer["feature_size"]) for layer in block["layers"]]
    assert layers == [("stem", 16), ("stage1", 16), ("stage2", 32), ("stage3", 64), ("stage4", 128)]
    familiarity = load_classifier_checkpoint(DEFAULT_MODEL_PATH)[1]["familiarity"]
    assert familiarity.thresholds == tuple(layer["threshold"] for layer in block["layers"])
    # The card quotes the thresholds the checkpoint holds.
    card_words = " ".join(raw["card"].split())
    assert all(f"{layer['name']} {layer['threshold']:.2f}" in card_words for layer in block["layers"])
    assert "python -m ml fit-familiarity --model" in raw["card"]


def test_the_shipped_model_describes_itself_to_the_user():
    description = Predictor.from_checkpoint(DEFAULT_MODEL_PATH, device="cpu").description
    assert (description.name, description.version) == ("hpaweb-synth-v1", "1")
    assert description.summary == "Trained on synthetic fields only; not validated on real images."
    assert description.card == MODEL_CARD.read_text(encoding="utf-8")


def test_model_card_gives_the_commands_and_the_three_held_out_scores():
    card = MODEL_CARD.read_text(encoding="utf-8")
    _model, checkpoint = load_classifier_checkpoint(DEFAULT_MODEL_PATH)
    # The card's training command is the one the checkpoint recorded (data folder relative).
    recorded = checkpoint["data"]["command"].replace(str(Path(checkpoint["data"]["source"]).parent) + "/", "data/")
    assert recorded in card.replace("\\\n    ", "")
    scores = {
        name: float(value)
        for name, value in re.findall(r"\| \**(hpaweb-synth-v1|ceiling|floor)\**.*?\| \**(0\.\d{4})\** \|", card)
    }
    assert set(scores) == {"hpaweb-synth-v1", "ceiling", "floor"}
    assert scores["floor"] < scores["hpaweb-synth-v1"] <= scores["ceiling"]
    assert scores["hpaweb-synth-v1"] >= QUALITY_TARGET_MAP
    assert "never seen a real HPA image" in card


@pytest.mark.slow
def test_whole_pipeline_with_the_shipped_model_scores_on_fields_it_never_saw(tmp_path: Path):
    data = tmp_path / "fresh"
    write_dataset(data, n_images=6, seed=TRAINING_SEED + 4242, size_px=2048, bit_depth=8)
    assert Predictor.from_checkpoint(DEFAULT_MODEL_PATH, device="cpu").name == "hpaweb-synth-v1"
    assert main(["predict", "--images", str(data), "--out", str(tmp_path / "submission.csv"), "--device", "cpu"]) == 0
    scores = score(read_submission(data / "solution.csv"), read_submission(tmp_path / "submission.csv"))
    assert scores.mAP >= QUALITY_TARGET_MAP, scores
