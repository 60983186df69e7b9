"""Helpers of the `ml` tests: small drawn fields, a stand-in segmenter, tiny checkpoints and networks."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ml.checkpoints import CLASSIFIER_ARCHITECTURE, save_unet_checkpoint
from ml.constants import CHANNELS
from ml.io import FieldImages
from ml.segmentation import Segmentation
from ml.segmentation.hpa.config import build_unet, unet_config

TINY_CONFIG = {
    "architecture": CLASSIFIER_ARCHITECTURE,
    "widths": [8, 16],
    "input_size_px": 32,
    "mean": [0.1, 0.2, 0.3, 0.4],
    "std": [0.5, 0.6, 0.7, 0.8],
    "blend_cell_weight": 0.7,
    "image_pooling": "mean",
    "dropout": 0.0,
}


@dataclass(frozen=True, eq=False)
class DrawnField:
    field: FieldImages
    nuclei_labels: np.ndarray  # uint16 (H, W)
    cell_labels: np.ndarray  # uint16 (H, W)


def draw_field(
    *,
    size_px: int = 256,
    centres: tuple[tuple[int, int], ...] = ((60, 60), (60, 190), (190, 120)),
    nucleus_radius_px: int = 15,
    cell_radius_px: int = 45,
) -> DrawnField:
    """Disk cells around disk nuclei; cell i holds nucleus i. Intensities differ per channel."""
    rows, cols = np.mgrid[:size_px, :size_px]
    nuclei_labels = np.zeros((size_px, size_px), dtype=np.uint16)
    cell_labels = np.zeros((size_px, size_px), dtype=np.uint16)
    for label, (row, col) in enumerate(centres, start=1):
        distance = np.hypot(rows - row, cols - col)
        cell_labels[distance <= cell_radius_px] = label
        nuclei_labels[distance <= nucleus_radius_px] = label
    in_cell = (cell_labels > 0).astype(np.float32)
    texture = ((rows + cols) % 7 / 7).astype(np.float32)  # some structure for the classifier to see
    field = FieldImages(
        red=0.3 * in_cell,
        green=in_cell * (0.2 + 0.6 * texture),
        blue=0.8 * (nuclei_labels > 0).astype(np.float32),
        yellow=0.4 * in_cell,
    )
    return DrawnField(field=field, nuclei_labels=nuclei_labels, cell_labels=cell_labels)


class FakeSegmenter:
    """Returns fixed label images, standing in for a segmentation backend."""

    def __init__(self, nuclei_labels: np.ndarray, cell_labels: np.ndarray) -> None:
        self.nuclei_labels = nuclei_labels
        self.cell_labels = cell_labels
        self.calls = 0

    def __call__(self, field: FieldImages) -> Segmentation:
        self.calls += 1
        return Segmentation(
            nuclei_labels=self.nuclei_labels,
            cell_labels=self.cell_labels,
            backend="fake",
            channels_used=("blue", "green"),
        )


def write_field_pngs(directory: Path, image_id: str, field: FieldImages) -> None:
    """Kaggle layout: one 8-bit PNG per channel."""
    for name in CHANNELS:
        pixels = getattr(field, name)
        if pixels is not None:
            Image.fromarray(np.rint(pixels * 255).astype(np.uint8)).save(directory / f"{image_id}_{name}.png")


# A DPN U-Net encoder of the official topology at a few channels, for fast tests.
TINY_ENCODER = {
    "stem_channels": 8,
    "blocks": [1, 1, 1, 1],
    "residual_channels": [8, 8, 8, 8],
    "bottleneck_channels": [4, 4, 4, 4],
    "dense_increments": [2, 2, 2, 2],
    "groups": 2,
}


FOREGROUND = (0.0, -10.0, 10.0)  # U-Net logits of (unused, border, foreground)
BACKGROUND = (10.0, -10.0, -10.0)


def constant_network(path: Path, *, kind: str, logits: tuple[float, float, float]) -> Path:
    """A tiny segmentation U-Net checkpoint whose output is `logits` everywhere: all weights
    zero but the final bias."""
    config = unet_config(kind, encoder=TINY_ENCODER)
    model = build_unet(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.final[0].bias.copy_(torch.tensor(logits))
    save_unet_checkpoint(path, state_dict=model.state_dict(), config=config)
    return path


def save_tiny_classifier(path: Path) -> Path:
    """An untrained classifier small enough to run in milliseconds (32 px crops), saved as a checkpoint."""
    from ml.checkpoints import save_classifier_checkpoint
    from ml.classifier.network import CellClassifier

    save_classifier_checkpoint(
        path,
        model=CellClassifier(widths=TINY_CONFIG["widths"], dropout=TINY_CONFIG["dropout"]),
        config=TINY_CONFIG,
        metrics={"val_map": 0.25},
        data={"images": 3},
    )
    return path
