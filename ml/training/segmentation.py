"""Training or fine-tuning a segmentation U-Net on label images (`python -m ml train-seg`, `ml.cli.train_seg`).

`train_segmentation(images=..., labels=..., out=..., kind=...)` reads a Kaggle-layout folder of
fields (`{ID}_{red,green,blue,yellow}.png|tif`) and a folder of their 16-bit label images,
`{ID}_nuclei.png` (nuclei network) or `{ID}_cells.png` (cell network), as `python -m ml segment`
writes them. Inputs are prepared exactly as for serving (`ml.segmentation.hpa.preprocess`);
targets, at the network's scale, are the three classes of the DPNUnet training: background,
touching border (two objects within a 5 x 5 window for nuclei, 7 x 7 for cells) and foreground,
learnt with cross-entropy (the padding is ignored).

Training starts from scratch or from a converted checkpoint (`init`); when fine-tuning, batch
norm statistics stay frozen, since the batches of whole fields are small. Flips and 90-degree
rotations augment; CUDA runs in mixed precision. The seed fixes initialisation, the
validation split and the augmentation.
"""

import contextlib
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi
from torch import nn
from tqdm import tqdm

from ml.checkpoints import load_unet_checkpoint, save_unet_checkpoint
from ml.device import resolve_device
from ml.io import InputError, find_fields, read_field, read_labels_png
from ml.segmentation.hpa.config import build_unet, unet_config
from ml.segmentation.hpa.preprocess import PAD_PX, input_channels, prepare_input
from ml.training.common import seed_everything

BACKGROUND, BORDER, FOREGROUND = 0, 1, 2
IGNORE = -100  # padding: no loss
BORDER_WINDOW_PX = {"nuclei": 5, "cell": 7}  # at the network's scale
LABEL_FILE_SUFFIX = {"nuclei": "nuclei", "cell": "cells"}


@dataclass(frozen=True)
class Sample:
    image: torch.Tensor  # float32 (3, H', W'), as served
    target: torch.Tensor  # int64 (H', W'): BACKGROUND, BORDER, FOREGROUND or IGNORE


def border_targets(labels: np.ndarray, *, window_px: int) -> np.ndarray:
    """int64 classes of a label image: BORDER where two objects share a window, else FOREGROUND / BACKGROUND."""
    labels = labels.astype(np.int64)
    highest = ndi.maximum_filter(labels, size=window_px, mode="nearest")
    # Background counts as above every label, so that the minimum is the lowest object's label.
    lowest = ndi.minimum_filter(np.where(labels > 0, labels, labels.max(initial=0) + 1), size=window_px, mode="nearest")
    classes = np.where(labels > 0, FOREGROUND, BACKGROUND)
    classes[(highest > 0) & (lowest < highest)] = BORDER
    return classes


def make_sample(field, labels: np.ndarray, *, kind: str, config: Mapping) -> Sample:
    """A field and its label image -> network input and targets at the network's scale."""
    if labels.shape != field.shape:
        raise InputError(
            f"The label image is {labels.shape[1]}x{labels.shape[0]} px but the field is {field.shape[1]}x{field.shape[0]} px."
        )
    names, _ = input_channels(field, kind=kind)
    network_input = prepare_input(
        [getattr(field, name) for name in names],
        scale_factor=config["scale_factor"],
        mean=config["mean"],
        std=config["std"],
    )
    height, width = network_input.scaled_shape
    # Nearest label at the centre of each scaled pixel.
    rows = np.minimum(((np.arange(height) + 0.5) * labels.shape[0] / height).astype(np.intp), labels.shape[0] - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * labels.shape[1] / width).astype(np.intp), labels.shape[1] - 1)
    classes = border_targets(labels[np.ix_(rows, cols)], window_px=BORDER_WINDOW_PX[kind])
    target = np.full(network_input.image.shape[1:], IGNORE, dtype=np.int64)
    target[PAD_PX : PAD_PX + height, PAD_PX : PAD_PX + width] = classes
    return Sample(image=torch.from_numpy(network_input.image), target=torch.from_numpy(target))


def load_samples(images: Path, labels: Path, *, kind: str, config: Mapping) -> list[Sample]:
    fields = find_fields(images)
    if not fields:
        raise InputError(f"No fields found in {images}; expected files named {{ID}}_green.png and {{ID}}_blue.png.")
    samples = []
    for image_id, paths in tqdm(fields.items(), desc="Preparing fields", unit="field", file=sys.stderr, leave=False):
        label_path = labels / f"{image_id}_{LABEL_FILE_SUFFIX[kind]}.png"
        if not label_path.is_file():
            raise InputError(
                f"Field {image_id} has no label image {label_path.name} in {labels}; write label images with "
                "`python -m ml segment` or remove the field."
            )
        try:
            samples.append(make_sample(read_field(paths), read_labels_png(label_path), kind=kind, config=config))
        except InputError as error:
            raise InputError(f"Field {image_id}: {error}") from None
    return samples


def augment(sample: Sample, generator: torch.Generator) -> Sample:
    """Random horizontal flip and 90-degree rotation, the same for image and target."""
    image, target = sample.image, sample.target
    if torch.rand(1, generator=generator).item() < 0.5:
        image, target = image.flip(-1), target.flip(-1)
    turns = int(torch.randint(0, 4, (1,), generator=generator))
    return Sample(image=torch.rot90(image, turns, dims=(-2, -1)), target=torch.rot90(target, turns, dims=(-2, -1)))


def batches(samples: list[Sample], *, batch_size: int, generator: torch.Generator | None) -> list[list[int]]:
    """Indices in batches of samples of one size; shuffled when a generator is given."""
    by_shape: dict[tuple[int, ...], list[int]] = {}
    order = torch.randperm(len(samples), generator=generator).tolist() if generator else range(len(samples))
    for index in order:
        by_shape.setdefault(tuple(samples[index].image.shape), []).append(index)
    chunks = [
        indices[start : start + batch_size]
        for indices in by_shape.values()
        for start in range(0, len(indices), batch_size)
    ]
    if generator is not None:
        chunks = [chunks[position] for position in torch.randperm(len(chunks), generator=generator).tolist()]
    return chunks


def train_one_epoch(
    model: nn.Module,
    samples: list[Sample],
    *,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    autocast_dtype: torch.dtype | None,
    device: torch.device,
    batch_size: int,
    freeze_batchnorm: bool,
    generator: torch.Generator,
    description: str,
) -> float:
    model.train()
    if freeze_batchnorm:
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
    criterion = nn.CrossEntropyLoss(ignore_index=IGNORE)
    total, seen = 0.0, 0
    bar = tqdm(
        batches(samples, batch_size=batch_size, generator=generator),
        desc=description,
        unit="batch",
        file=sys.stderr,
        leave=False,
    )
    for indices in bar:
        augmented = [augment(samples[index], generator) for index in indices]
        images = (
            torch.stack([sample.image for sample in augmented]).to(device).contiguous(memory_format=torch.channels_last)
        )
        targets = torch.stack([sample.target for sample in augmented]).to(device)
        with _autocast(device, autocast_dtype):
            logits = model(images)
        loss = criterion(logits.float(), targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        total += loss.item() * len(indices)
        seen += len(indices)
        bar.set_postfix(loss=f"{total / seen:.4f}")
    return total / max(seen, 1)


@torch.inference_mode()
def evaluate(
    model: nn.Module, samples: list[Sample], *, device: torch.device, autocast_dtype: torch.dtype | None
) -> dict[str, float]:
    """Mean cross-entropy and pixel accuracy over the unpadded pixels."""
    model.eval()
    criterion = nn.CrossEntropyLoss(ignore_index=IGNORE, reduction="sum")
    loss, correct, counted = 0.0, 0, 0
    for indices in batches(samples, batch_size=1, generator=None):
        image = samples[indices[0]].image[None].to(device).contiguous(memory_format=torch.channels_last)
        target = samples[indices[0]].target[None].to(device)
        with _autocast(device, autocast_dtype):
            logits = model(image).float()
        valid = target != IGNORE
        loss += criterion(logits, target).item()
        correct += int((logits.argmax(1) == target)[valid].sum())
        counted += int(valid.sum())
    return {"val_loss": loss / max(counted, 1), "val_pixel_accuracy": correct / max(counted, 1)}


def train_segmentation(
    *,
    images: Path,
    labels: Path,
    out: Path,
    kind: str = "cell",
    init: Path | None = None,
    epochs: int = 10,
    device: str = "auto",
    learning_rate: float = 1e-4,
    batch_size: int = 1,
    val_fraction: float = 0.1,
    seed: int = 0,
    encoder: Mapping | None = None,
) -> dict[str, float]:
    """Train and save a segmentation checkpoint; returns its metrics.

    `encoder` sets the widths of a network trained from scratch (DPN-92 when None).
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(
            f"Train for at least 1 epoch in batches of at least 1 field (got {epochs} epochs, batch size {batch_size})."
        )
    seed_everything(seed)
    target_device = resolve_device(device)
    if init is not None:
        model, info = load_unet_checkpoint(init, kind=kind)
        config = info["config"]
    else:
        config = unet_config(kind, encoder=encoder)
        model = build_unet(config)
    model = model.to(target_device, memory_format=torch.channels_last)

    samples = load_samples(images, labels, kind=kind, config=config)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(samples), generator=generator).tolist()
    validation_count = int(len(samples) * val_fraction)
    validation = [samples[index] for index in order[:validation_count]]
    training = [samples[index] for index in order[validation_count:]]

    autocast_dtype = None
    if target_device.type == "cuda":
        autocast_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    # Loss scaling is needed for float16 only; disabled, the scaler passes gradients through.
    scaler = torch.amp.GradScaler(target_device.type, enabled=autocast_dtype == torch.float16)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)
    metrics: dict[str, float] = {}
    for epoch in range(1, epochs + 1):
        metrics["train_loss"] = train_one_epoch(
            model,
            training,
            optimizer=optimizer,
            scaler=scaler,
            autocast_dtype=autocast_dtype,
            device=target_device,
            batch_size=batch_size,
            freeze_batchnorm=init is not None,
            generator=generator,
            description=f"Epoch {epoch}/{epochs}",
        )
        if validation:
            metrics.update(evaluate(model, validation, device=target_device, autocast_dtype=autocast_dtype))
        print(
            f"Epoch {epoch}/{epochs}: " + ", ".join(f"{key} {value:.4f}" for key, value in metrics.items()),
            file=sys.stderr,
        )
    save_unet_checkpoint(
        out,
        state_dict=model.state_dict(),
        config=config,
        metrics={**metrics, "epochs": epochs},
        source={
            "init": Path(init).name if init else None,
            "training_fields": len(training),
            "validation_fields": len(validation),
            "seed": seed,
        },
    )
    return metrics


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    return torch.autocast(device_type=device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
