"""Cell classification with a trained checkpoint: load once, predict in batches.

Where the checkpoint describes its training cells (`ml.classifier.familiarity`), every cell also
gets a familiarity score and an unfamiliar flag, from the same forward pass as its probabilities:
the network's penultimate features go to its head, and the pooled features of the layers the
description names (`CellClassifier.pooled_layers`) to the description.
"""

import contextlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ml.checkpoints import load_classifier_checkpoint
from ml.classifier.base import CellPredictions, ModelDescription
from ml.classifier.familiarity import Familiarity
from ml.constants import CHANNELS, NUM_CLASSES
from ml.crops import CellCrops, normalize_crops
from ml.device import resolve_device

# Written into every new checkpoint's config by training; serving reads them from the checkpoint.
DEFAULT_BLEND_CELL_WEIGHT = 0.7
DEFAULT_IMAGE_POOLING = "mean"
# What a checkpoint without a card summary is shown with.
UNDESCRIBED_SUMMARY = "This model has no card: how it was trained and validated is unknown."


class Predictor:
    """Per-cell and image-level class probabilities from one loaded classifier."""

    def __init__(self, model: nn.Module, checkpoint: dict, *, device: torch.device, batch_size: int = 256) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        self.config: dict = checkpoint["config"]
        self.description = describe_checkpoint(checkpoint)
        # What load_classifier_checkpoint made of the file's "familiarity"; None when it has none.
        self.familiarity: Familiarity | None = checkpoint.get("familiarity")
        self.device = device
        self.batch_size = batch_size
        # channels_last runs the convolutions faster on both CPU and GPU.
        self.model = model.to(device=device, memory_format=torch.channels_last).eval()

    @property
    def name(self) -> str:
        return self.description.name

    @property
    def input_size_px(self) -> int:
        return self.description.input_size_px

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, device: str = "auto", batch_size: int = 256) -> "Predictor":
        model, checkpoint = load_classifier_checkpoint(path)
        return cls(model, checkpoint, device=resolve_device(device), batch_size=batch_size)

    def predict_crops(self, images: np.ndarray) -> np.ndarray:
        """float32 (N, 4, S, S) crops in [0, 1], S = input_size_px -> float32 (N, 19) probabilities."""
        probabilities, _layer_features = self.predict_crops_and_features(images, layers=())
        return probabilities

    def predict_crops_and_features(
        self, images: np.ndarray, *, layers: Sequence[str] | None = None
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(float32 (N, 19) probabilities, {layer name: float32 (N, width) pooled features}) of
        crops, from one forward pass; `layers` names the layers to return (default: those the
        familiarity description uses, none without one)."""
        expected = (len(CHANNELS), self.input_size_px, self.input_size_px)
        if images.ndim != 4 or images.shape[1:] != expected:
            raise ValueError(
                f"Crops must be (N, {', '.join(map(str, expected))}) for model {self.name}, got {images.shape}."
            )
        if layers is None:
            layers = self.familiarity.layer_names if self.familiarity is not None else ()
        probabilities = np.empty((len(images), NUM_CLASSES), dtype=np.float32)
        sizes = self.model.layer_sizes
        layer_features = {name: np.empty((len(images), sizes[name]), dtype=np.float32) for name in layers}
        penultimate = self.model.layer_names[-1]
        # Mixed precision only where it pays (GPU); CPU inference stays float32.
        autocast = torch.autocast(device_type="cuda") if self.device.type == "cuda" else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            for start in range(0, len(images), self.batch_size):
                batch = torch.from_numpy(np.ascontiguousarray(images[start : start + self.batch_size]))
                batch = batch.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
                batch = normalize_crops(batch, mean=self.config["mean"], std=self.config["std"])
                pooled = self.model.pooled_layers(batch, names={*layers, penultimate})
                logits = self.model.classify(pooled[penultimate])
                probabilities[start : start + len(batch)] = logits.float().sigmoid().cpu().numpy()
                for name, features in layer_features.items():
                    features[start : start + len(batch)] = pooled[name].float().cpu().numpy()
        return probabilities, layer_features

    def predict_cells(self, crops: CellCrops) -> CellPredictions:
        """Cell probabilities (N, 19), image probabilities (19,) and final probabilities (N, 19).

        Image-level probabilities pool the field's cells (config "image_pooling": mean or max);
        final = w * cell + (1 - w) * image with w = config "blend_cell_weight", which lends each
        cell the evidence of the whole field. A field without cells gets zero image probabilities.
        With a familiarity description in the checkpoint, each cell's familiarity and unfamiliar
        flag come from the same forward pass; without one they are None.
        """
        cell_probabilities, layer_features = self.predict_crops_and_features(crops.images)
        familiarity = unfamiliar = None
        if self.familiarity is not None:
            familiarity, unfamiliar = self.familiarity.score(layer_features)
        image_probabilities = pool_cells(cell_probabilities, pooling=self.config["image_pooling"])
        final_probabilities = blend(
            cell_probabilities, image_probabilities, cell_weight=self.config["blend_cell_weight"]
        )
        return CellPredictions(
            cell_probabilities=cell_probabilities,
            image_probabilities=image_probabilities,
            final_probabilities=final_probabilities,
            familiarity=familiarity,
            unfamiliar=unfamiliar,
        )


def describe_checkpoint(checkpoint: dict) -> ModelDescription:
    """The description of a loaded hpaweb checkpoint (the dict `load_classifier_checkpoint` returns)."""
    config = checkpoint["config"]
    return ModelDescription(
        name=checkpoint["name"],
        version=str(checkpoint.get("model_version", 1)),
        format="hpaweb",
        architecture=config["architecture"],
        input_size_px=int(config["input_size_px"]),
        class_names=tuple(checkpoint["class_names"]),
        summary=checkpoint.get("summary") or UNDESCRIBED_SUMMARY,
        card=checkpoint.get("card", ""),
        mean=tuple(config["mean"]),
        std=tuple(config["std"]),
        metrics=dict(checkpoint.get("metrics") or {}),
        data=dict(checkpoint.get("data") or {}),
    )


def pool_cells(cell_probabilities: np.ndarray, *, pooling: str) -> np.ndarray:
    """float32 (19,) image-level probabilities of a field from its cells' (N, 19): "mean" or "max".

    A field without cells gets zeros.
    """
    if len(cell_probabilities) == 0:
        return np.zeros(NUM_CLASSES, dtype=np.float32)
    if pooling == "max":
        return cell_probabilities.max(axis=0)
    return cell_probabilities.mean(axis=0)


def blend(cell_probabilities: np.ndarray, image_probabilities: np.ndarray, *, cell_weight: float) -> np.ndarray:
    """w * cell + (1 - w) * image, in float32: what a cell is finally given."""
    weight = np.float32(cell_weight)
    return weight * cell_probabilities + (1 - weight) * image_probabilities
