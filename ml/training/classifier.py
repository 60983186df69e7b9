"""`python -m ml train`: train the per-cell classifier from image-level labels.

    python -m ml train --data DIR --out CKPT [--refine-rounds 1] [--epochs 6] [--size 96] ...

DIR is a Kaggle-layout folder (`train.csv` with `ID,Label`, `{ID}_{red,green,blue,yellow}.png`),
the real HPA training set or one written by `python -m ml synth`. Steps:
1. segment every field and crop every cell (cached, see `ml.training.data`), split the fields into
   training and validation stratified by their rarest label;
2. every cell inherits its field's labels; train with class-balanced sampling, flips and
   90-degree rotations, mixed precision on CUDA;
3. refinement rounds: predict every training cell, keep a field label only on the cells that
   show it (`ml.training.data.refine_targets`; cells showing none become Negative), train again;
4. save the final model with its config, validation metrics and a description of its data.

`--cell-labels-from-truth` trains on the true cell labels of `DIR/solution.csv` instead (the
ceiling of weak-label training; synthetic data only). When `DIR/solution.csv` exists, the
validation fields are also scored with the competition metric (`ml.evaluate`).
"""

import argparse
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, WeightedRandomSampler
from tqdm import tqdm

from ml.training import data as celldata
from ml.checkpoints import ARCHITECTURE, save_checkpoint
from ml.constants import CLASS_NAMES, NUM_CLASSES
from ml.crops import normalize_crops
from ml.device import resolve_device
from ml.encoding import SubmissionRow, labels_to_rles, prediction_string, read_submission, rle_to_kaggle
from ml.evaluate import average_precision, score
from ml.io import InputError
from ml.classifier.network import CellClassifier
from ml.cli.segment import add_segmentation_arguments, build_segmenter

BLEND_CELL_WEIGHT = 0.7
IMAGE_POOLING = "mean"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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
    model: nn.Module, crops: np.ndarray, *, device: torch.device, mean: list[float], std: list[float], batch_size: int = 512
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


def blend(table: celldata.CellTable, cell_probabilities: np.ndarray, *, cell_weight: float) -> np.ndarray:
    """What the Predictor serves: w * cell + (1 - w) * mean over the field's cells."""
    field_sum = np.zeros((len(table.image_ids), NUM_CLASSES), dtype=np.float64)
    np.add.at(field_sum, table.field_index, cell_probabilities)
    counts = np.bincount(table.field_index, minlength=len(table.image_ids))[:, None]
    image_probabilities = field_sum / np.maximum(counts, 1)
    return (cell_weight * cell_probabilities + (1 - cell_weight) * image_probabilities[table.field_index]).astype(np.float32)


def image_level_map(table: celldata.CellTable, cell_probabilities: np.ndarray) -> tuple[float, list[float | None]]:
    """Macro AP of field-level (mean over cells) probabilities against the image labels."""
    field_sum = np.zeros((len(table.image_ids), NUM_CLASSES))
    np.add.at(field_sum, table.field_index, cell_probabilities)
    pooled = field_sum / np.maximum(np.bincount(table.field_index, minlength=len(table.image_ids))[:, None], 1)
    per_class: list[float | None] = []
    for label in range(NUM_CLASSES):
        positives = table.image_labels[:, label] > 0
        per_class.append(average_precision(pooled[:, label], positives, int(positives.sum())) if positives.any() else None)
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
    args: argparse.Namespace,
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
        batch_size=args.batch_size,
        sampler=sampler,
        num_workers=args.workers,
        drop_last=len(usable) > args.batch_size,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=max(1, epochs * len(loader)), pct_start=0.15
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


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="Kaggle-layout folder with train.csv")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint to write (.pt)")
    parser.add_argument("--cache-dir", type=Path, help="segmentation and crop cache (default: DATA/.hpaweb-cache)")
    parser.add_argument("--size", type=int, default=96, help="crop side in px (the model input size)")
    parser.add_argument("--epochs", type=int, default=6, help="epochs on inherited (or true) labels")
    parser.add_argument("--refine-rounds", type=int, default=1, help="rounds of relabelling cells with the model")
    parser.add_argument("--refine-epochs", type=int, default=4, help="epochs after each relabelling")
    parser.add_argument(
        "--cell-labels-from-truth",
        action="store_true",
        help="train on the true cell labels of DATA/solution.csv (synthetic data; the weak-label ceiling)",
    )
    parser.add_argument("--max-fields", type=int, help="use only the first N fields of train.csv")
    parser.add_argument("--val-fraction", type=float, default=0.15)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--widths", type=int, nargs=4, default=(32, 64, 128, 256))
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    parser.add_argument("--workers", type=int, default=0, help="data loader worker processes")
    add_segmentation_arguments(parser)


def run(args: argparse.Namespace) -> int:
    start_time = time.perf_counter()
    seed_everything(args.seed)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    data_dir: Path = args.data
    cache_dir: Path = args.cache_dir or data_dir / ".hpaweb-cache"
    try:
        image_labels = celldata.read_image_labels(data_dir / "train.csv")
    except InputError as error:
        print(error, file=sys.stderr)
        return 2
    image_ids = sorted(image_labels)[: args.max_fields] if args.max_fields else sorted(image_labels)
    image_labels = {i: image_labels[i] for i in image_ids}
    solution_path = data_dir / "solution.csv"
    solution = {row.image_id: row for row in read_submission(solution_path)} if solution_path.is_file() else None
    if args.cell_labels_from_truth and solution is None:
        print(f"--cell-labels-from-truth needs {solution_path} (true cell labels); it does not exist.", file=sys.stderr)
        return 2

    segmenter = build_segmenter(args)
    celldata.cache_fields(
        data_dir,
        image_ids,
        cache_dir=cache_dir,
        segmenter=segmenter,
        size_px=args.size,
        progress=lambda ids: tqdm(ids, desc="Segmenting and cropping", unit="field", file=sys.stderr),
    )
    train_ids, val_ids = celldata.stratified_split(image_labels, validation_fraction=args.val_fraction, seed=args.seed)
    train_table = celldata.load_cell_table(cache_dir, image_labels, train_ids, size_px=args.size)
    val_table = celldata.load_cell_table(cache_dir, image_labels, val_ids, size_px=args.size)
    print(
        f"{len(train_ids)} training fields ({len(train_table)} cells), {len(val_ids)} validation fields "
        f"({len(val_table)} cells)",
        file=sys.stderr,
    )
    mean, std = channel_statistics(train_table.crops, sample=2000, rng=np.random.default_rng(args.seed))

    generator = torch.Generator().manual_seed(args.seed)
    model = CellClassifier(widths=tuple(args.widths), dropout=args.dropout).to(device, memory_format=torch.channels_last)
    if args.cell_labels_from_truth:
        targets = celldata.truth_targets(train_table, solution, cache_dir=cache_dir)
        label_source = "true cell labels (solution.csv), segmented cells matched at IoU >= 0.5"
        rounds = 0
    else:
        targets = train_table.inherited_targets()
        label_source = f"image labels inherited by every cell, refined {args.refine_rounds} time(s) with the model's own predictions"
        rounds = args.refine_rounds
    history = []
    fit_args = dict(args=args, device=device, mean=mean, std=std, generator=generator)
    losses = fit(model, train_table, targets, epochs=args.epochs, stage="round 0", **fit_args)
    history.append({"round": 0, "losses": losses, **evaluate_validation(model, val_table, solution, cache_dir, device, mean, std)})
    for round_index in range(1, rounds + 1):
        probabilities = predict_table(model, train_table.crops, device=device, mean=mean, std=std)
        targets = celldata.refine_targets(train_table, probabilities)
        changed = float((targets != train_table.inherited_targets()).any(axis=1).mean())
        print(f"round {round_index}: relabelled; {changed:.1%} of cells changed targets", file=sys.stderr)
        losses = fit(model, train_table, targets, epochs=args.refine_epochs, stage=f"round {round_index}", **fit_args)
        history.append(
            {
                "round": round_index,
                "losses": losses,
                "changed_cell_fraction": changed,
                **evaluate_validation(model, val_table, solution, cache_dir, device, mean, std),
            }
        )
    for entry in history:
        shown = {k: round(v, 4) for k, v in entry.items() if k.startswith("val_") and isinstance(v, float)}
        print(f"round {entry['round']}: {shown}", file=sys.stderr)

    elapsed = time.perf_counter() - start_time
    final = history[-1]
    counts = np.zeros(NUM_CLASSES, dtype=np.int64)
    for labels in image_labels.values():
        counts[list(labels)] += 1
    save_checkpoint(
        args.out,
        model=model,
        config={
            "architecture": ARCHITECTURE,
            "widths": list(args.widths),
            "input_size_px": args.size,
            "mean": mean,
            "std": std,
            "blend_cell_weight": BLEND_CELL_WEIGHT,
            "image_pooling": IMAGE_POOLING,
            "dropout": args.dropout,
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
            "segmentation": args.segmentation,
            "crop_size_px": args.size,
            "seed": args.seed,
            "epochs": args.epochs,
            "refine_rounds": rounds,
            "refine_epochs": args.refine_epochs if rounds else 0,
            "device": str(device),
            "training_time_s": round(elapsed, 1),
            "command": "python -m ml train " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["train"] else sys.argv[1:]),
        },
    )
    print(f"Saved {args.out} after {elapsed / 60:.1f} min.", file=sys.stderr)
    return 0


def evaluate_validation(
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
    image_map, image_per_class = image_level_map(table, probabilities)
    metrics: dict = {"val_image_map": image_map, "val_image_ap_per_class": image_per_class}
    if solution is not None:
        final = blend(table, probabilities, cell_weight=BLEND_CELL_WEIGHT)
        cell_map, per_class = competition_map(table, final, solution, cache_dir=cache_dir)
        metrics.update({"val_map": cell_map, "val_ap_per_class": per_class})
    return {key: (value if not isinstance(value, float) or math.isfinite(value) else None) for key, value in metrics.items()}
