"""Training the per-cell classifier from image-level labels (`python -m ml train`, `ml.cli.train`).

`train(config, segmenter=...)` follows the torchvision references' `main(args)`, with a frozen
`TrainConfig` in place of the parsed arguments. DIR (`config.data_dir`) is a Kaggle-layout folder (`train.csv` with `ID,Label`, `{ID}_{red,green,blue,yellow}.png`),
the real HPA training set or one written by `python -m ml synth`. Steps:
1. segment every field and crop every cell (cached, see `ml.training.data`), split the fields into
   training and validation stratified by their rarest label;
2. every cell inherits its field's labels; train with class-balanced sampling, flips and
   90-degree rotations, mixed precision on CUDA;
3. refinement rounds: predict every training cell, keep a field label only on the cells that
   show it (`ml.training.data.refine_targets`; cells showing none become Negative), train again;
4. describe the training cells as the final model sees them (`ml.classifier.familiarity`, on
   the pooled features of every layer of every training cell) and save the model with its config,
   validation metrics, that familiarity block and a description of its data.

`add_familiarity_from_data` (`python -m ml fit-familiarity`) fits the familiarity block of an
existing checkpoint from a data folder through the same cache, leaving its weights untouched.

`cell_labels_from_truth` trains on the true cell labels of `DIR/solution.csv` instead (the
ceiling of weak-label training; synthetic data only). When `DIR/solution.csv` exists, the
validation fields are also scored with the competition metric (`ml.evaluate`), with the
predictor's own pooling and blending (`ml.classifier.predictor.pool_cells` and `blend`).
"""

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, WeightedRandomSampler
from tqdm import tqdm

from ml.checkpoints import (
    CLASSIFIER_ARCHITECTURE,
    add_familiarity,
    load_classifier_checkpoint,
    save_classifier_checkpoint,
)
from ml.classifier.familiarity import Familiarity, fit_familiarity
from ml.classifier.network import CellClassifier
from ml.classifier.predictor import DEFAULT_BLEND_CELL_WEIGHT, DEFAULT_IMAGE_POOLING, blend, pool_cells
from ml.constants import CLASS_NAMES, NUM_CLASSES
from ml.crops import normalize_crops
from ml.device import resolve_device
from ml.encoding import SubmissionRow, labels_to_rles, prediction_string, read_submission, rle_to_kaggle
from ml.evaluate import average_precision, score
from ml.io import InputError
from ml.segmentation import Segmenter
from ml.training import data as celldata
from ml.training.common import seed_everything


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs besides its segmenter; `python -m ml train` fills it in."""

    data_dir: Path  # Kaggle-layout folder with train.csv
    out: Path  # checkpoint to write
    cache_dir: Path | None = None  # default: data_dir / ".hpaweb-cache"
    size_px: int = 96  # crop side, the model's input size
    epochs: int = 6  # on inherited (or true) labels
    refine_rounds: int = 1
    refine_epochs: int = 4
    cell_labels_from_truth: bool = False
    max_fields: int | None = None
    val_fraction: float = 0.15
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    widths: tuple[int, ...] = (32, 64, 128, 256)
    dropout: float = 0.2
    seed: int = 0
    threads: int = 2
    workers: int = 0  # data loader worker processes
    device: str = "auto"
    command: str = field(default="", compare=False)  # recorded in the checkpoint's data

    @property
    def resolved_cache_dir(self) -> Path:
        return self.cache_dir or self.data_dir / ".hpaweb-cache"


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random flips, 90-degree rotations and per-channel brightness, independently per crop."""
    count = len(images)
    flip = torch.rand(count, generator=generator) < 0.5
    images = torch.where(flip.view(-1, 1, 1, 1).to(images.device), images.flip(-1), images)
    turns = torch.randint(0, 4, (count,), generator=generator)
    rotated = images.clone()
    for k in (1, 2, 3):
        chosen = (turns == k).nonzero().flatten().to(images.device)
        if len(chosen):
            rotated[chosen] = torch.rot90(images[chosen], k, dims=(-2, -1))
    gain = torch.empty(count, images.shape[1], 1, 1).uniform_(0.75, 1.3, generator=generator)
    return rotated * gain.to(images.device)


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler | None,
    device: torch.device,
    mean: list[float],
    std: list[float],
    generator: torch.Generator,
    description: str,
) -> float:
    model.train()
    criterion = nn.BCEWithLogitsLoss()
    total, seen = 0.0, 0
    bar = tqdm(loader, desc=description, unit="batch", file=sys.stderr, leave=False)
    for images, targets in bar:
        images = augment(images, generator).to(device, non_blocking=True)
        images = normalize_crops(images, mean=mean, std=std).contiguous(memory_format=torch.channels_last)
        targets = targets.to(device, non_blocking=True)
        with torch.autocast(device_type="cuda", enabled=scaler is not None):
            loss = criterion(model(images).float(), targets)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        scheduler.step()
        total += loss.item() * len(images)
        seen += len(images)
        bar.set_postfix(loss=f"{total / seen:.4f}")
    return total / max(seen, 1)


@torch.inference_mode()
def predict_table(
    model: nn.Module,
    crops: np.ndarray,
    *,
    device: torch.device,
    mean: list[float],
    std: list[float],
    batch_size: int = 512,
) -> np.ndarray:
    """float32 (N, 19) sigmoid probabilities of uint8 crops."""
    model.eval()
    probabilities = np.zeros((len(crops), NUM_CLASSES), dtype=np.float32)
    for start in range(0, len(crops), batch_size):
        batch = torch.from_numpy(crops[start : start + batch_size].astype(np.float32) / 255.0).to(device)
        batch = normalize_crops(batch, mean=mean, std=std).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type="cuda", enabled=device.type == "cuda"):
            probabilities[start : start + len(batch)] = model(batch).float().sigmoid().cpu().numpy()
    return probabilities


@torch.inference_mode()
def predict_layer_features(
    model: CellClassifier,
    crops: np.ndarray,
    *,
    device: torch.device,
    mean: list[float],
    std: list[float],
    batch_size: int = 512,
) -> dict[str, np.ndarray]:
    """{layer name: float32 (N, width)} pooled features of every layer (`CellClassifier.pooled_layers`,
    the last being the penultimate features) of uint8 crops, in the network's order."""
    model.eval()
    layer_features = {name: np.zeros((len(crops), size), dtype=np.float32) for name, size in model.layer_sizes.items()}
    for start in range(0, len(crops), batch_size):
        batch = torch.from_numpy(crops[start : start + batch_size].astype(np.float32) / 255.0).to(device)
        batch = normalize_crops(batch, mean=mean, std=std).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type="cuda", enabled=device.type == "cuda"):
            pooled = model.pooled_layers(batch)
        for name, features in layer_features.items():
            features[start : start + len(batch)] = pooled[name].float().cpu().numpy()
    return layer_features


def describe_training_cells(
    model: CellClassifier, table: celldata.CellTable, *, device: torch.device, mean: list[float], std: list[float]
) -> Familiarity:
    """The familiarity block of a model: the pooled features of every layer of every cell of
    `table`, described (cross-fitted by field, `ml.classifier.familiarity`)."""
    if len(table) < 3:
        raise InputError(
            f"The fields give {len(table)} cell(s); describing the training cells needs at least 3. "
            "Pass a data folder whose fields have cells."
        )
    layer_features = predict_layer_features(model, table.crops, device=device, mean=mean, std=std)
    familiarity = fit_familiarity(layer_features, groups=table.field_index)
    layers = ", ".join(
        f"{layer.name} (shrinkage {layer.shrinkage:.3f}, distance {layer.threshold:.2f})"
        for layer in familiarity.layers
    )
    print(
        f"Familiarity of {familiarity.training_cells} training cells, unfamiliar beyond any of: {layers} "
        f"(the {familiarity.percentile:g}th percentile of the smallest per-layer tail probability; "
        f"{familiarity.calibration})",
        file=sys.stderr,
    )
    return familiarity


def add_familiarity_from_data(
    model_path: Path,
    *,
    data_dir: Path,
    segmenter: Segmenter,
    out: Path | None = None,
    cache_dir: Path | None = None,
    max_fields: int | None = None,
    device: str = "auto",
    threads: int = 2,
) -> Familiarity:
    """Describe the cells of `data_dir`'s fields (train.csv, the first `max_fields`) as the
    classifier at `model_path` sees them and write it into `out` (default: in place); the
    weights are not touched. Crops come from the training cache at the checkpoint's input size.

    Raises `InputError` (data) or `CheckpointError` (model) with a sentence.
    """
    torch.set_num_threads(threads)
    resolved = resolve_device(device)
    model, checkpoint = load_classifier_checkpoint(model_path)
    config = checkpoint["config"]
    size_px = int(config["input_size_px"])
    cache_dir = cache_dir or data_dir / ".hpaweb-cache"
    image_labels = celldata.read_image_labels(data_dir / "train.csv")
    image_ids = sorted(image_labels)[:max_fields] if max_fields else sorted(image_labels)
    celldata.cache_fields(
        data_dir,
        image_ids,
        cache_dir=cache_dir,
        segmenter=segmenter,
        size_px=size_px,
        progress=lambda ids: tqdm(ids, desc="Segmenting and cropping", unit="field", file=sys.stderr),
    )
    table = celldata.load_cell_table(cache_dir, image_labels, image_ids, size_px=size_px)
    model = model.to(resolved, memory_format=torch.channels_last)
    familiarity = describe_training_cells(model, table, device=resolved, mean=config["mean"], std=config["std"])
    add_familiarity(model_path, familiarity=familiarity, out=out)
    return familiarity


def field_rows(table: celldata.CellTable) -> list[np.ndarray]:
    """The rows of each field's cells, in `table.image_ids` order."""
    return [np.flatnonzero(table.field_index == row) for row in range(len(table.image_ids))]


def served_probabilities(
    table: celldata.CellTable, cell_probabilities: np.ndarray, *, pooling: str, cell_weight: float
) -> tuple[np.ndarray, np.ndarray]:
    """(image probabilities (F, 19), final cell probabilities (N, 19)) as the Predictor serves them."""
    image_probabilities = np.zeros((len(table.image_ids), NUM_CLASSES), dtype=np.float32)
    final = np.zeros_like(cell_probabilities)
    for row, cells in enumerate(field_rows(table)):
        image_probabilities[row] = pool_cells(cell_probabilities[cells], pooling=pooling)
        final[cells] = blend(cell_probabilities[cells], image_probabilities[row], cell_weight=cell_weight)
    return image_probabilities, final


def image_level_map(image_labels: np.ndarray, image_probabilities: np.ndarray) -> tuple[float, list[float | None]]:
    """Macro AP of field-level probabilities against the image labels."""
    per_class: list[float | None] = []
    for label in range(NUM_CLASSES):
        positives = image_labels[:, label] > 0
        scored = image_probabilities[:, label]
        per_class.append(average_precision(scored, positives, int(positives.sum())) if positives.any() else None)
    scored = [ap for ap in per_class if ap is not None]
    return (float(np.mean(scored)) if scored else 0.0), per_class


def competition_map(
    table: celldata.CellTable,
    final_probabilities: np.ndarray,
    solution: dict[str, SubmissionRow],
    *,
    cache_dir: Path,
) -> tuple[float, list[float | None]]:
    """The competition mAP of the validation fields, scored against the solution's true cells."""
    rows = []
    for row, image_id in enumerate(table.image_ids):
        labels = celldata.cached_cell_labels(cache_dir, image_id)
        rles = labels_to_rles(labels)
        cells = np.flatnonzero(table.field_index == row)
        triples = [(rle_to_kaggle(rles[int(table.cell_ids[c])]), final_probabilities[c]) for c in cells]
        rows.append(SubmissionRow(image_id, labels.shape[1], labels.shape[0], prediction_string(triples)))
    scores = score([solution[i] for i in table.image_ids], rows)
    return scores.mAP, list(scores.per_class_ap)


def fit(
    model: nn.Module,
    table: celldata.CellTable,
    targets: np.ndarray,
    *,
    epochs: int,
    config: TrainConfig,
    device: torch.device,
    mean: list[float],
    std: list[float],
    generator: torch.Generator,
    stage: str,
) -> list[float]:
    """Train `epochs` epochs on the rows with usable targets; one-cycle learning rate."""
    usable = np.flatnonzero(~np.isnan(targets).any(axis=1))
    weights = celldata.class_balanced_weights(targets[usable])
    sampler = WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double), len(usable), generator=generator)
    loader = DataLoader(
        celldata.CellCropDataset(table, targets, usable),
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.workers,
        drop_last=len(usable) > config.batch_size,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=max(1, epochs * len(loader)), pct_start=0.15
    )
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" else None
    losses = []
    for epoch in range(epochs):
        loss = train_one_epoch(
            model,
            loader,
            optimizer=optimizer,
            scheduler=scheduler,
            scaler=scaler,
            device=device,
            mean=mean,
            std=std,
            generator=generator,
            description=f"{stage} epoch {epoch + 1}/{epochs}",
        )
        losses.append(loss)
        print(f"{stage} epoch {epoch + 1}/{epochs}: loss {loss:.4f}", file=sys.stderr)
    return losses


def channel_statistics(crops: np.ndarray, *, sample: int, rng: np.random.Generator) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the crops in [0, 1] (background included, as served)."""
    rows = rng.choice(len(crops), size=min(sample, len(crops)), replace=False)
    values = crops[np.sort(rows)].astype(np.float32) / 255.0
    mean = values.mean(axis=(0, 2, 3))
    std = np.maximum(values.std(axis=(0, 2, 3)), 1e-3)
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


def train(config: TrainConfig, *, segmenter: Segmenter) -> dict:
    """Train a classifier as `config` says and save it to `config.out`; returns its final validation metrics.

    Raises `InputError` with a sentence when the data folder cannot be used.
    """
    start_time = time.perf_counter()
    seed_everything(config.seed)
    torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    data_dir = config.data_dir
    cache_dir = config.resolved_cache_dir
    image_labels = celldata.read_image_labels(data_dir / "train.csv")
    image_ids = sorted(image_labels)[: config.max_fields] if config.max_fields else sorted(image_labels)
    image_labels = {i: image_labels[i] for i in image_ids}
    solution_path = data_dir / "solution.csv"
    solution = {row.image_id: row for row in read_submission(solution_path)} if solution_path.is_file() else None
    if config.cell_labels_from_truth and solution is None:
        raise InputError(f"--cell-labels-from-truth needs {solution_path} (true cell labels); it does not exist.")

    celldata.cache_fields(
        data_dir,
        image_ids,
        cache_dir=cache_dir,
        segmenter=segmenter,
        size_px=config.size_px,
        progress=lambda ids: tqdm(ids, desc="Segmenting and cropping", unit="field", file=sys.stderr),
    )
    train_ids, val_ids = celldata.stratified_split(
        image_labels, validation_fraction=config.val_fraction, seed=config.seed
    )
    train_table = celldata.load_cell_table(cache_dir, image_labels, train_ids, size_px=config.size_px)
    val_table = celldata.load_cell_table(cache_dir, image_labels, val_ids, size_px=config.size_px)
    print(
        f"{len(train_ids)} training fields ({len(train_table)} cells), {len(val_ids)} validation fields "
        f"({len(val_table)} cells)",
        file=sys.stderr,
    )
    mean, std = channel_statistics(train_table.crops, sample=2000, rng=np.random.default_rng(config.seed))

    generator = torch.Generator().manual_seed(config.seed)
    model = CellClassifier(widths=tuple(config.widths), dropout=config.dropout).to(
        device, memory_format=torch.channels_last
    )
    if config.cell_labels_from_truth:
        targets = celldata.truth_targets(train_table, solution, cache_dir=cache_dir)
        label_source = "true cell labels (solution.csv), segmented cells matched at IoU >= 0.5"
        rounds = 0
    else:
        targets = train_table.inherited_targets()
        label_source = f"image labels inherited by every cell, refined {config.refine_rounds} time(s) with the model's own predictions"
        rounds = config.refine_rounds
    history = []
    fit_args = {"config": config, "device": device, "mean": mean, "std": std, "generator": generator}
    losses = fit(model, train_table, targets, epochs=config.epochs, stage="round 0", **fit_args)
    history.append({"round": 0, "losses": losses, **evaluate(model, val_table, solution, cache_dir, device, mean, std)})
    for round_index in range(1, rounds + 1):
        probabilities = predict_table(model, train_table.crops, device=device, mean=mean, std=std)
        targets = celldata.refine_targets(train_table, probabilities)
        changed = float((targets != train_table.inherited_targets()).any(axis=1).mean())
        print(f"round {round_index}: relabelled; {changed:.1%} of cells changed targets", file=sys.stderr)
        losses = fit(model, train_table, targets, epochs=config.refine_epochs, stage=f"round {round_index}", **fit_args)
        history.append(
            {
                "round": round_index,
                "losses": losses,
                "changed_cell_fraction": changed,
                **evaluate(model, val_table, solution, cache_dir, device, mean, std),
            }
        )
    for entry in history:
        shown = {k: round(v, 4) for k, v in entry.items() if k.startswith("val_") and isinstance(v, float)}
        print(f"round {entry['round']}: {shown}", file=sys.stderr)

    familiarity = describe_training_cells(model, train_table, device=device, mean=mean, std=std)
    elapsed = time.perf_counter() - start_time
    final = history[-1]
    counts = np.zeros(NUM_CLASSES, dtype=np.int64)
    for labels in image_labels.values():
        counts[list(labels)] += 1
    save_classifier_checkpoint(
        config.out,
        model=model,
        config={
            "architecture": CLASSIFIER_ARCHITECTURE,
            "widths": list(config.widths),
            "input_size_px": config.size_px,
            "mean": mean,
            "std": std,
            "blend_cell_weight": DEFAULT_BLEND_CELL_WEIGHT,
            "image_pooling": DEFAULT_IMAGE_POOLING,
            "dropout": config.dropout,
        },
        metrics={**{k: v for k, v in final.items() if k.startswith("val_")}, "history": history},
        data={
            "source": str(data_dir),
            "fields": len(image_ids),
            "fields_sha256_16": celldata.describe_fields(image_ids),
            "training_fields": len(train_ids),
            "validation_fields": len(val_ids),
            "training_cells": len(train_table),
            "validation_cells": len(val_table),
            "image_label_counts": {CLASS_NAMES[i]: int(c) for i, c in enumerate(counts)},
            "cell_labels": label_source,
            "segmentation": segmenter.backend,
            "crop_size_px": config.size_px,
            "seed": config.seed,
            "epochs": config.epochs,
            "refine_rounds": rounds,
            "refine_epochs": config.refine_epochs if rounds else 0,
            "device": str(device),
            "training_time_s": round(elapsed, 1),
            "command": config.command,
        },
        familiarity=familiarity,
    )
    print(f"Saved {config.out} after {elapsed / 60:.1f} min.", file=sys.stderr)
    return {key: value for key, value in final.items() if key.startswith("val_")}


def evaluate(
    model: nn.Module,
    table: celldata.CellTable,
    solution: dict[str, SubmissionRow] | None,
    cache_dir: Path,
    device: torch.device,
    mean: list[float],
    std: list[float],
) -> dict:
    """Validation metrics: image-level macro AP always; the competition mAP when truth exists."""
    if len(table) == 0:
        return {}
    probabilities = predict_table(model, table.crops, device=device, mean=mean, std=std)
    image_probabilities, final = served_probabilities(
        table, probabilities, pooling=DEFAULT_IMAGE_POOLING, cell_weight=DEFAULT_BLEND_CELL_WEIGHT
    )
    image_map, image_per_class = image_level_map(table.image_labels, image_probabilities)
    metrics: dict = {"val_image_map": image_map, "val_image_ap_per_class": image_per_class}
    if solution is not None:
        cell_map, per_class = competition_map(table, final, solution, cache_dir=cache_dir)
        metrics.update({"val_map": cell_map, "val_ap_per_class": per_class})
    return {
        key: (value if not isinstance(value, float) or math.isfinite(value) else None) for key, value in metrics.items()
    }
