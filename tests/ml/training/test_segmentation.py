from pathlib import Path

import numpy as np
import pytest
import torch

from ml.checkpoints import load_unet_checkpoint, save_unet_checkpoint
from ml.segmentation.hpa.config import build_unet, unet_config
from ml.segmentation.hpa.preprocess import PAD_PX
from ml.training.segmentation import (
    BACKGROUND,
    BORDER,
    FOREGROUND,
    IGNORE,
    border_targets,
    make_sample,
    train_segmentation,
)
from tests.ml.segmentation.support import write_label_dataset
from tests.ml.support import TINY_ENCODER, draw_field


@pytest.fixture
def dataset(tmp_path) -> tuple[Path, Path]:
    """Two 128 px fields with their nuclei and cell label images, in the layout train-seg reads."""
    return write_label_dataset(tmp_path)


def test_border_targets_mark_where_two_objects_share_a_window():
    labels = np.zeros((1, 12), dtype=np.uint16)
    labels[0, 2:5] = 1
    labels[0, 5:8] = 2
    assert border_targets(labels, window_px=3).tolist() == [
        [
            BACKGROUND,
            BACKGROUND,
            FOREGROUND,
            FOREGROUND,
            BORDER,
            BORDER,
            FOREGROUND,
            FOREGROUND,
            BACKGROUND,
            BACKGROUND,
            BACKGROUND,
            BACKGROUND,
        ]
    ]


def test_border_targets_leave_a_lone_object_without_border():
    labels = np.zeros((9, 9), dtype=np.uint16)
    labels[2:7, 2:7] = 3
    assert (border_targets(labels, window_px=7) == np.where(labels > 0, FOREGROUND, BACKGROUND)).all()


def test_sample_targets_cover_the_scaled_field_and_ignore_the_padding():
    drawn = draw_field(size_px=128, centres=((40, 40), (90, 90)), nucleus_radius_px=10, cell_radius_px=28)
    sample = make_sample(drawn.field, drawn.cell_labels, kind="cell", config=unet_config("cell"))
    assert sample.image.shape == (3, 96, 96) and sample.target.shape == (96, 96)
    inside = sample.target[PAD_PX : PAD_PX + 32, PAD_PX : PAD_PX + 32]
    assert (inside != IGNORE).all()
    assert int((sample.target != IGNORE).sum()) == 32 * 32
    assert inside[10, 10] == FOREGROUND and inside[0, 31] == BACKGROUND  # cell 1 centre, empty corner


def test_one_step_from_scratch_writes_a_loadable_checkpoint(dataset, tmp_path):
    images, labels = dataset
    out = tmp_path / "cell-net.pt"
    metrics = train_segmentation(
        images=images,
        labels=labels,
        out=out,
        kind="cell",
        epochs=1,
        device="cpu",
        val_fraction=0.5,
        encoder=TINY_ENCODER,
    )
    model, info = load_unet_checkpoint(out, kind="cell")
    assert info["config"] == unet_config("cell", encoder=TINY_ENCODER)
    assert info["source"] == {"init": None, "training_fields": 1, "validation_fields": 1, "seed": 0}
    assert set(metrics) == {"train_loss", "val_loss", "val_pixel_accuracy"}
    assert info["metrics"] == {**metrics, "epochs": 1}
    torch.manual_seed(0)  # what train_segmentation started from
    untrained = build_unet(info["config"]).state_dict()
    assert not torch.equal(model.state_dict()["final.0.weight"], untrained["final.0.weight"])


def test_the_seed_makes_training_repeatable(dataset, tmp_path):
    images, labels = dataset
    weights = []
    for name in ("first.pt", "second.pt"):
        train_segmentation(
            images=images,
            labels=labels,
            out=tmp_path / name,
            kind="nuclei",
            epochs=1,
            device="cpu",
            encoder=TINY_ENCODER,
        )
        weights.append(torch.load(tmp_path / name, weights_only=True)["model"])
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


def test_fine_tuning_keeps_batch_norm_statistics(dataset, tmp_path):
    images, labels = dataset
    torch.manual_seed(1)
    config = unet_config("cell", encoder=TINY_ENCODER)
    start = build_unet(config).state_dict()
    save_unet_checkpoint(tmp_path / "start.pt", state_dict=start, config=config)
    train_segmentation(
        images=images,
        labels=labels,
        out=tmp_path / "tuned.pt",
        kind="cell",
        init=tmp_path / "start.pt",
        epochs=1,
        device="cpu",
    )
    tuned = torch.load(tmp_path / "tuned.pt", weights_only=True)
    assert tuned["source"]["init"] == "start.pt"
    assert torch.equal(tuned["model"]["encoder_stages.0.1.running_mean"], start["encoder_stages.0.1.running_mean"])
    assert not torch.equal(tuned["model"]["encoder_stages.0.0.weight"], start["encoder_stages.0.0.weight"])
