"""Cell-level validation of annotated cells (`TrainConfig.cell_val_fraction`): some of the cells with classes
of their own are held out of training, stratified by class, and scored every epoch."""

import numpy as np

from ml.checkpoints import load_classifier_checkpoint
from ml.constants import NUM_CLASSES
from ml.training.card import model_card
from ml.training.classifier import TrainConfig, train, validation_score
from ml.training.data import multi_hot, stratified_cell_split
from ml.training.store import CellStore
from tests.ml.support import draw_field


def test_the_split_holds_out_the_same_fraction_of_every_rarest_class_and_at_least_one_of_three():
    targets = np.stack([multi_hot(c) for c in [(0,)] * 10 + [(0, 16)] * 4 + [(5,)] * 3 + [(7,)] * 2])
    held = stratified_cell_split(targets, validation_fraction=0.2, seed=1)
    rarest = {int(i): int(np.flatnonzero(targets[i] > 0)[-1] if targets[i, 16] else np.flatnonzero(targets[i])[0])
              for i in held}  # fmt: skip
    assert sorted(rarest.values()) == [0, 0, 5, 16]  # 2 of 10, 1 of 4 (16 is rarer than 0), 1 of 3, none of 2
    assert np.array_equal(held, np.sort(held)) and len(set(held.tolist())) == len(held)
    assert np.array_equal(stratified_cell_split(targets, validation_fraction=0.2, seed=1), held)
    assert len(stratified_cell_split(targets, validation_fraction=0.0, seed=1)) == 0


def test_validation_prefers_the_competition_map_then_the_cell_level_score_then_the_image_level_one():
    assert validation_score({"val_image_map": 1.0, "val_cell_map": 0.4, "val_map": 0.3}) == 0.3
    assert validation_score({"val_image_map": 1.0, "val_cell_map": 0.4}) == 0.4
    assert validation_score({"val_image_map": 1.0}) == 1.0
    assert validation_score({}) is None


def test_held_out_annotated_cells_are_scored_every_epoch_and_never_trained_on(tmp_path):
    drawn = draw_field(size_px=128, centres=((30, 30), (30, 95), (95, 60)), nucleus_radius_px=8, cell_radius_px=22)
    store = CellStore.create(tmp_path / "store", size_px=32)
    for index in range(4):  # every cell annotated, as a store of annotated cells alone is
        classes = {1: (index % 2,), 2: (16,), 3: (18,)}
        store.add_field(f"f{index}", drawn.field.stack(), drawn.cell_labels, image_labels=(), cell_classes=classes)
    config = TrainConfig(
        store=tmp_path / "store", out=tmp_path / "m.pt", size_px=32, epochs=2, refine_rounds=0, widths=(4, 4, 8, 8),
        batch_size=4, val_fraction=0.0, cell_val_fraction=0.25, device="cpu", threads=1,
    )  # fmt: skip
    result = train(config)
    # 12 cells; rarest classes: 0 (2 cells), 1 (2), 16 (4), 18 (4): one of each 4 is held out, none of each 2.
    assert set(result.metrics) == {"val_cell_map", "val_cell_ap_per_class"}
    per_class = result.metrics["val_cell_ap_per_class"]
    assert len(per_class) == NUM_CLASSES and [i for i, ap in enumerate(per_class) if ap is not None] == [16, 18]
    assert [sorted(k for k in entry if k.startswith("val_")) for entry in result.history] == [
        ["val_cell_ap_per_class", "val_cell_map"]
    ]
    data = load_classifier_checkpoint(result.checkpoint)[1]["data"]
    assert "10 cells with their own cell labels" in data["cell_labels"]


def _annotated_store(tmp_path):
    drawn = draw_field(size_px=128, centres=((30, 30), (30, 95), (95, 60)), nucleus_radius_px=8, cell_radius_px=22)
    store = CellStore.create(tmp_path / "store", size_px=32)
    for index in range(6):
        classes = {1: (0,), 2: (16,), 3: (18,)}
        store.add_field(f"f{index}", drawn.field.stack(), drawn.cell_labels, image_labels=(), cell_classes=classes)
    return tmp_path / "store"


def _config(store, out, **options):
    return TrainConfig(
        store=store, out=out, size_px=32, refine_rounds=0, widths=(4, 4, 8, 8), batch_size=6, val_fraction=0.0,
        cell_val_fraction=0.34, device="cpu", threads=1, **options,
    )  # fmt: skip


def test_fine_tuning_that_never_beats_the_starting_model_gives_its_weights_back(tmp_path):
    import torch

    store = _annotated_store(tmp_path)
    start = train(_config(store, tmp_path / "start.pt", epochs=40))
    start_weights = load_classifier_checkpoint(start.checkpoint)[0].state_dict()
    # A learning rate that wrecks the network: no epoch can do better on the held-out cells than the start.
    wrecked = train(_config(store, tmp_path / "tuned.pt", epochs=3, patience=5, init=start.checkpoint, lr=500.0))
    assert wrecked.metrics["kept_starting_model"] is True
    assert wrecked.metrics["start_val_cell_map"] == wrecked.metrics["val_cell_map"]
    assert wrecked.history[0]["best_epoch"] == 0 and "stopped_early_after_epoch" not in wrecked.history[0]
    tuned_weights = load_classifier_checkpoint(wrecked.checkpoint)[0].state_dict()
    assert all(torch.equal(start_weights[name], tuned_weights[name]) for name in start_weights)
    card = model_card(wrecked.checkpoint)
    score = f"{wrecked.metrics['val_cell_map']:.4f}"
    assert f"cell-level macro AP of held-out annotated cells: {score}" in card
    assert f"the starting model on the same data, cell-level macro AP of held-out annotated cells: {score}" in card
    assert "keeps its weights" in card
    # Without a starting model there is no epoch 0, and nothing about one is reported.
    assert "kept_starting_model" not in start.metrics and "start" not in start.history[0]
    assert "starting model" not in model_card(start.checkpoint)


def test_the_best_epoch_is_kept_at_the_end_of_a_stage_as_after_early_stopping(tmp_path):
    store = _annotated_store(tmp_path)
    start = train(_config(store, tmp_path / "start.pt", epochs=4))
    scores = []
    config = _config(store, tmp_path / "tuned.pt", epochs=6, patience=10, init=start.checkpoint)
    tuned = train(config, progress=lambda report: scores.append(report.metrics["val_cell_map"]))
    start_score = tuned.history[0]["start"]["val_cell_map"]
    candidates = [start_score, *scores]  # epoch 0 is the starting model
    best_epoch = tuned.history[0]["best_epoch"]
    assert len(scores) == 6 and best_epoch == candidates.index(max(candidates))
    assert tuned.metrics["val_cell_map"] == max(candidates) and tuned.metrics["start_val_cell_map"] == start_score
    assert tuned.metrics["kept_starting_model"] is (best_epoch == 0)
