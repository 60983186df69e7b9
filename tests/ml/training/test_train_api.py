"""Training through the library API: a store built in memory, progress, cancelling, resuming, early stopping."""

import json

import numpy as np
import pytest
import torch

from ml.checkpoints import load_classifier_checkpoint
from ml.io import InputError
from ml.training.classifier import TrainConfig, TrainingCancelled, TrainProgress, train
from ml.training.store import CellStore
from tests.ml.support import draw_field


def build_store(path, *, fields: int = 6):
    drawn = draw_field(size_px=128, centres=((30, 30), (30, 95), (95, 60)), nucleus_radius_px=8, cell_radius_px=22)
    store = CellStore.create(path, size_px=32)
    rng = np.random.default_rng(0)
    for index in range(fields):
        stack = drawn.field.stack() * rng.uniform(0.5, 1.0, size=(4, 1, 1)).astype(np.float32)
        labels = (index % 3, 16) if index % 2 else (index % 3,)
        cell_classes = {1: (5,)} if index == 0 else None
        store.add_field(f"f{index}", stack, drawn.cell_labels, image_labels=labels, cell_classes=cell_classes)
    return store


def tiny(tmp_path, **overrides) -> TrainConfig:
    values = {
        "store": tmp_path / "store", "out": tmp_path / "m.pt", "size_px": 32, "epochs": 2, "refine_rounds": 1,
        "refine_epochs": 1, "widths": (4, 4, 8, 8), "batch_size": 4, "validation_fields": ("f4", "f5"),
        "device": "cpu", "threads": 1,
    }  # fmt: skip
    return TrainConfig(**{**values, **overrides})


def test_train_from_a_store_reports_every_epoch_and_writes_a_loadable_checkpoint(tmp_path):
    build_store(tmp_path / "store")
    seen: list[TrainProgress] = []
    result = train(tiny(tmp_path), progress=seen.append)
    assert result.checkpoint == tmp_path / "m.pt" and result.epochs_run == 3 and not result.stopped_early
    assert [(p.stage, p.epoch, p.epochs, p.epoch_overall, p.epochs_overall) for p in seen] == [
        ("round 0", 1, 2, 1, 3), ("round 0", 2, 2, 2, 3), ("round 1", 1, 1, 3, 3)
    ]  # fmt: skip
    assert seen[-1].eta_s == 0 and all(p.eta_s >= 0 and np.isfinite(p.loss) for p in seen)
    assert len(seen[0].metrics["val_image_ap_per_class"]) == 19
    model, checkpoint = load_classifier_checkpoint(result.checkpoint)
    assert checkpoint["data"]["training_fields"] == 4 and checkpoint["data"]["validation_fields"] == 2
    assert checkpoint["data"]["training_cells"] == 12
    assert "1 cells with their own cell labels" in checkpoint["data"]["cell_labels"]
    assert result.metrics == {k: v for k, v in checkpoint["metrics"].items() if k.startswith("val_")}
    events = [json.loads(line)["event"] for line in (tmp_path / "m.run" / "log.jsonl").read_text().splitlines()]
    assert events == ["start", "epoch", "epoch", "refine", "epoch", "done"]


def test_cancel_then_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    build_store(tmp_path / "store")
    whole = train(tiny(tmp_path, out=tmp_path / "whole.pt"))
    calls = {"n": 0}

    def stop_in_second_epoch() -> bool:
        calls["n"] += 1
        return calls["n"] > 4  # epoch 1 has 3 batches; stop inside epoch 2

    with pytest.raises(TrainingCancelled) as cancelled:
        train(tiny(tmp_path, out=tmp_path / "cut.pt"), should_stop=stop_in_second_epoch)
    assert cancelled.value.state_path == tmp_path / "cut.run" / "state.pt"
    assert not (tmp_path / "cut.pt").exists()
    resumed = train(tiny(tmp_path, out=tmp_path / "cut.pt", resume=True))
    assert resumed.epochs_run == 3
    a, b = torch.load(whole.checkpoint, weights_only=True), torch.load(resumed.checkpoint, weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["metrics"]["history"] == b["metrics"]["history"]
    events = [json.loads(line)["event"] for line in (tmp_path / "cut.run" / "log.jsonl").read_text().splitlines()]
    assert events == ["start", "epoch", "cancelled", "resume", "epoch", "refine", "epoch", "done"]


def test_resume_refuses_a_state_of_other_settings(tmp_path):
    build_store(tmp_path / "store")
    with pytest.raises(TrainingCancelled):
        train(tiny(tmp_path), should_stop=iter([False] * 4 + [True] * 99).__next__)
    with pytest.raises(InputError, match=r"belongs to a run with other settings .*; resume with the same options"):
        train(tiny(tmp_path, lr=0.1, resume=True))


def test_early_stopping_ends_a_stage_without_a_better_validation_score(tmp_path):
    build_store(tmp_path / "store")
    result = train(tiny(tmp_path, lr=0.0, epochs=5, refine_rounds=0, patience=1))  # nothing learns: no gain
    assert result.stopped_early and result.epochs_run == 2
    assert result.history[0]["best_epoch"] == 1 and result.history[0]["stopped_early_after_epoch"] == 2
    lines = [json.loads(line) for line in (tmp_path / "m.run" / "log.jsonl").read_text().splitlines()]
    assert [line["event"] for line in lines][-2:] == ["early_stop", "done"]


def test_fine_tuning_keeps_the_init_checkpoints_architecture_and_normalisation(tmp_path):
    build_store(tmp_path / "store")
    first = train(tiny(tmp_path, out=tmp_path / "first.pt", refine_rounds=0, epochs=1))
    tuned = train(
        tiny(tmp_path, out=tmp_path / "tuned.pt", refine_rounds=0, epochs=1, init=first.checkpoint, widths=(8,))
    )
    _, a = load_classifier_checkpoint(first.checkpoint)
    _, b = load_classifier_checkpoint(tuned.checkpoint)
    assert b["config"]["widths"] == [4, 4, 8, 8] and b["config"]["mean"] == a["config"]["mean"]
    assert b["data"]["init"] == "first.pt"


def test_train_refuses_a_store_of_another_crop_size(tmp_path):
    build_store(tmp_path / "store")
    with pytest.raises(InputError, match=r"holds 32 px crops; pass --size 32\.$"):
        train(tiny(tmp_path, size_px=64))
