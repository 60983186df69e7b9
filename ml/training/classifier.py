"""Training the per-cell classifier from image-level (and any cell-level) labels (`python -m ml train`).

`train(config, segmenter=..., progress=..., should_stop=...)` follows the torchvision references'
`main(args)`, with a frozen `TrainConfig` in place of the parsed arguments. The data are a cell
store (`ml.training.store`): given a Kaggle-layout folder (`config.data_dir`: `train.csv` with
`ID,Label` and `{ID}_{red,green,blue,yellow}.png|tif|tif.gz|jpg`) it is prepared first
(`ml.training.prepare`, `config.jobs` processes, resumable), or `config.store` names a ready one.
Steps:
1. split the fields into training and validation, stratified by their rarest label (or
   `validation_fields`);
2. every cell with classes of its own (annotated, in the store) trains on them; every other cell
   inherits its field's labels; class-balanced sampling (`DistributedBalancedSampler`, on every
   rank), flips, 90-degree rotations and gains, AdamW with a one-cycle schedule, mixed precision
   and channels-last on CUDA; cells are read from disk as they are drawn, so memory stays flat;
3. after every epoch: validation (image-level macro AP and per-class AP, the competition mAP
   where `DIR/solution.csv` exists), a line with the ETA, a JSON line in `RUN/log.jsonl`, the
   `progress` callback, and the whole training state in `RUN/state.pt`, so `resume=True`
   continues after a kill from the last finished epoch with the same result as an uninterrupted
   run; with `patience`, a stage stops when its validation score has not improved for that many
   epochs and keeps its best epoch's weights;
4. refinement rounds: predict every training cell, keep a field label only on the cells that
   show it (`ml.training.data.refine_targets`; cells showing none become Negative), train again;
5. describe (up to `familiarity_max_cells`) training cells as the final model sees them
   (`ml.classifier.familiarity`) and save the model with its config (architecture,
   preprocessing), validation metrics, that description and a description of its data.

The model is `arch` ("compact", or a timm backbone, `ml.training.backbones`), started from
`pretrained` weights ("imagenet" or a state_dict file) or fine-tuned from the classifier
checkpoint `init` (whose architecture, input size and normalisation it keeps). Under torchrun it
is DistributedDataParallel (`ml.training.distributed`): rank 0 prepares, evaluates and writes.

`cell_labels_from_truth` trains on the true cell labels of `DIR/solution.csv` instead (the
ceiling of weak-label training; synthetic data only). `add_familiarity_from_data`
(`python -m ml fit-familiarity`) fits the familiarity block of an existing checkpoint from a data
folder through the same store.
"""

import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from ml.checkpoints import (
    BACKBONE_ARCHITECTURE,
    CLASSIFIER_ARCHITECTURE,
    PREPROCESSING,
    add_familiarity,
    load_classifier_checkpoint,
    save_atomically,
    save_classifier_checkpoint,
)
from ml.classifier.familiarity import Familiarity, fit_familiarity
from ml.classifier.network import COMPACT, BackboneCellClassifier
from ml.classifier.predictor import DEFAULT_BLEND_CELL_WEIGHT, DEFAULT_IMAGE_POOLING, blend, pool_cells
from ml.constants import CLASS_NAMES, NUM_CLASSES
from ml.crops import normalize_crops
from ml.device import resolve_device
from ml.encoding import SubmissionRow, labels_to_rles, prediction_string, read_submission, rle_to_kaggle
from ml.evaluate import average_precision, score
from ml.io import InputError
from ml.segmentation import Segmenter
from ml.training import data as celldata
from ml.training.backbones import build_model, check_arch, load_pretrained
from ml.training.common import seed_everything
from ml.training.distributed import Distributed, DistributedBalancedSampler
from ml.training.prepare import SegmenterSpec, prepare_store
from ml.training.store import CellStore, StoreCellDataset

STATE_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Everything one training run needs besides its segmenter; `python -m ml train` fills it in."""

    out: Path  # checkpoint to write
    data_dir: Path | None = None  # Kaggle-layout folder with train.csv (prepared into the store first)
    store: Path | None = None  # the cell store (default: cache_dir / f"cells-{size_px}px")
    cache_dir: Path | None = None  # default: data_dir / ".hpaweb-cache"
    size_px: int = 96  # crop side, the model's input size
    epochs: int = 6  # on inherited (or true) labels
    refine_rounds: int = 1
    refine_epochs: int = 4
    cell_labels_from_truth: bool = False
    max_fields: int | None = None
    val_fraction: float = 0.15
    validation_fields: tuple[str, ...] | None = None  # instead of a stratified split
    # Hold out this fraction of the training fields' cells that have classes of their own (stratified by
    # their rarest class) and score them (`val_cell_map`): a cell-level validation for annotated cells.
    cell_val_fraction: float = 0.0
    batch_size: int = 64
    samples_per_epoch: int | None = None  # cells drawn per epoch (default: as many as there are)
    lr: float = 3e-3
    weight_decay: float = 1e-4
    arch: str = COMPACT  # "compact" or a timm backbone name
    pretrained: str | None = None  # "imagenet" or a state_dict path (timm backbones)
    init: Path | None = None  # a classifier checkpoint to fine-tune
    widths: tuple[int, ...] = (32, 64, 128, 256)  # compact only
    dropout: float = 0.2
    seed: int = 0
    threads: int = 2
    workers: int = 0  # data loader worker processes
    jobs: int = 1  # preparation processes
    device: str = "auto"
    patience: int | None = None  # early stopping: epochs without a better validation score
    resume: bool = False  # continue from run_dir / "state.pt"
    run_dir: Path | None = None  # default: out's folder / f"{out stem}.run"
    familiarity_max_cells: int = 20_000
    command: str = field(default="", compare=False)  # recorded in the checkpoint's data

    @property
    def resolved_cache_dir(self) -> Path:
        if self.cache_dir is not None:
            return self.cache_dir
        if self.data_dir is None:
            raise InputError("A training run needs a data folder (data_dir) or a cell store (store).")
        return self.data_dir / ".hpaweb-cache"

    @property
    def resolved_store(self) -> Path:
        return self.store or self.resolved_cache_dir / f"cells-{self.size_px}px"

    @property
    def resolved_run_dir(self) -> Path:
        return self.run_dir or self.out.parent / f"{self.out.stem}.run"


@dataclass(frozen=True)
class TrainProgress:
    """What `train` reports after every epoch."""

    stage: str  # "round 0", "round 1", ...
    epoch: int  # 1-based within the stage
    epochs: int  # of the stage
    epoch_overall: int
    epochs_overall: int
    loss: float
    metrics: dict
    elapsed_s: float
    eta_s: float


@dataclass(frozen=True)
class TrainResult:
    checkpoint: Path
    metrics: dict  # the final validation metrics (val_image_map, val_image_ap_per_class, ...)
    history: list  # per round: losses and metrics
    epochs_run: int
    stopped_early: bool


class TrainingCancelled(Exception):
    """`should_stop` asked to stop; the last finished epoch is in `state_path` (resume with `resume=True`)."""

    def __init__(self, state_path: Path) -> None:
        super().__init__(f"Training was stopped on request; resume it from {state_path}.")
        self.state_path = state_path


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
    should_stop: Callable[[], bool] | None = None,
    show_bar: bool = True,
) -> tuple[float, int]:
    """(mean loss, cells seen) of one pass over `loader`; returns early (cells = -1) when `should_stop`."""
    model.train()
    criterion = nn.BCEWithLogitsLoss()
    total, seen = 0.0, 0
    bar = tqdm(loader, desc=description, unit="batch", file=sys.stderr, leave=False, disable=not show_bar)
    for images, targets in bar:
        if should_stop is not None and should_stop():
            return total / max(seen, 1), -1
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
    return total / max(seen, 1), seen


def _batches(crops: np.ndarray | Iterable[np.ndarray], batch_size: int) -> Iterator[np.ndarray]:
    if isinstance(crops, np.ndarray):
        for start in range(0, len(crops), batch_size):
            yield crops[start : start + batch_size]
    else:
        yield from crops


@torch.inference_mode()
def predict_table(
    model: nn.Module,
    crops: np.ndarray | Iterable[np.ndarray],
    *,
    device: torch.device,
    mean: list[float],
    std: list[float],
    batch_size: int = 512,
    count: int | None = None,
) -> np.ndarray:
    """float32 (N, 19) sigmoid probabilities of uint8 crops: an array, or `count` crops in batches."""
    model.eval()
    total = len(crops) if isinstance(crops, np.ndarray) else count
    probabilities = np.zeros((total, NUM_CLASSES), dtype=np.float32)
    start = 0
    for chunk in _batches(crops, batch_size):
        batch = torch.from_numpy(chunk.astype(np.float32) / 255.0).to(device)
        batch = normalize_crops(batch, mean=mean, std=std).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type="cuda", enabled=device.type == "cuda"):
            probabilities[start : start + len(batch)] = model(batch).float().sigmoid().cpu().numpy()
        start += len(batch)
    return probabilities


@torch.inference_mode()
def predict_layer_features(
    model: nn.Module,
    crops: np.ndarray | Iterable[np.ndarray],
    *,
    device: torch.device,
    mean: list[float],
    std: list[float],
    batch_size: int = 512,
    count: int | None = None,
) -> dict[str, np.ndarray]:
    """{layer name: float32 (N, width)} pooled features of every layer (`pooled_layers`, the last
    being the penultimate features) of uint8 crops, in the network's order."""
    model.eval()
    total = len(crops) if isinstance(crops, np.ndarray) else count
    layer_features = {name: np.zeros((total, size), dtype=np.float32) for name, size in model.layer_sizes.items()}
    start = 0
    for chunk in _batches(crops, batch_size):
        batch = torch.from_numpy(chunk.astype(np.float32) / 255.0).to(device)
        batch = normalize_crops(batch, mean=mean, std=std).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type="cuda", enabled=device.type == "cuda"):
            pooled = model.pooled_layers(batch)
        for name, features in layer_features.items():
            features[start : start + len(batch)] = pooled[name].float().cpu().numpy()
        start += len(batch)
    return layer_features


def describe_training_cells(
    model: nn.Module,
    table: celldata.CellTable,
    *,
    device: torch.device,
    mean: list[float],
    std: list[float],
    store: CellStore | None = None,
    max_cells: int | None = None,
    seed: int = 0,
) -> Familiarity:
    """The familiarity block of a model: the pooled features of every layer of the cells of
    `table` (crops from `table.crops`, or from `store`), described (cross-fitted by field,
    `ml.classifier.familiarity`). With `max_cells`, whole fields drawn at random up to that many cells."""
    if len(table) < 3:
        raise InputError(
            f"The fields give {len(table)} cell(s); describing the training cells needs at least 3. "
            "Pass a data folder whose fields have cells."
        )
    rows = np.arange(len(table))
    if max_cells is not None and len(table) > max_cells:
        order = np.random.default_rng(seed).permutation(len(table.image_ids))
        counts = np.bincount(table.field_index, minlength=len(table.image_ids))
        chosen = order[: max(1, int(np.searchsorted(np.cumsum(counts[order]), max_cells, side="right")))]
        rows = np.flatnonzero(np.isin(table.field_index, chosen))
    if store is None:
        crops, count = table.crops[rows], None
    else:
        chosen_ids = [table.image_ids[f] for f in sorted(set(table.field_index[rows].tolist()))]
        crops, count = store.iter_crops(chosen_ids), len(rows)
    layer_features = predict_layer_features(model, crops, device=device, mean=mean, std=std, count=count)
    familiarity = fit_familiarity(layer_features, groups=table.field_index[rows])
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
    weights are not touched. Crops come from the cell store at the checkpoint's input size.

    Raises `InputError` (data) or `CheckpointError` (model) with a sentence.
    """
    torch.set_num_threads(threads)
    resolved = resolve_device(device)
    model, checkpoint = load_classifier_checkpoint(model_path)
    config = checkpoint["config"]
    size_px = int(config["input_size_px"])
    cache_dir = cache_dir or data_dir / ".hpaweb-cache"
    store_path = cache_dir / f"cells-{size_px}px"
    _prepare(
        data_dir, store_path, size_px=size_px, segmenter=segmenter, jobs=1, max_fields=max_fields, cache_dir=cache_dir
    )
    store = CellStore.open(store_path)
    image_labels = _available_labels(celldata.read_image_labels(data_dir / "train.csv"), store, max_fields)
    table = _table(store, sorted(image_labels), image_labels)
    model = model.to(resolved, memory_format=torch.channels_last)
    familiarity = describe_training_cells(
        model, table, device=resolved, mean=config["mean"], std=config["std"], store=store
    )
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
    cell_labels_of: Callable[[str], np.ndarray],
) -> tuple[float, list[float | None]]:
    """The competition mAP of the validation fields, scored against the solution's true cells."""
    rows = []
    for row, image_id in enumerate(table.image_ids):
        labels = cell_labels_of(image_id)
        rles = labels_to_rles(labels)
        cells = np.flatnonzero(table.field_index == row)
        triples = [(rle_to_kaggle(rles[int(table.cell_ids[c])]), final_probabilities[c]) for c in cells]
        rows.append(SubmissionRow(image_id, labels.shape[1], labels.shape[0], prediction_string(triples)))
    scores = score([solution[i] for i in table.image_ids], rows)
    return scores.mAP, list(scores.per_class_ap)


def channel_statistics(crops: np.ndarray, *, sample: int, rng: np.random.Generator) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the crops in [0, 1] (background included, as served)."""
    rows = rng.choice(len(crops), size=min(sample, len(crops)), replace=False)
    values = crops[np.sort(rows)].astype(np.float32) / 255.0
    mean = values.mean(axis=(0, 2, 3))
    std = np.maximum(values.std(axis=(0, 2, 3)), 1e-3)
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


def store_channel_statistics(
    store: CellStore, table: celldata.CellTable, *, sample: int, rng: np.random.Generator
) -> tuple[list[float], list[float]]:
    """`channel_statistics` of a random sample of the table's cells, read from the store."""
    rows = np.sort(rng.choice(len(table), size=min(sample, len(table)), replace=False))
    offsets = np.concatenate([[0], np.cumsum(np.bincount(table.field_index, minlength=len(table.image_ids)))])
    crops = np.stack(
        [store.read_crop(table.image_ids[table.field_index[r]], int(r - offsets[table.field_index[r]])) for r in rows]
    )
    return channel_statistics(crops, sample=len(crops), rng=np.random.default_rng(0))


def evaluate(
    model: nn.Module,
    table: celldata.CellTable,
    solution: dict[str, SubmissionRow] | None,
    *,
    store: CellStore,
    device: torch.device,
    mean: list[float],
    std: list[float],
) -> dict:
    """Validation metrics: image-level macro AP always; the competition mAP when truth exists."""
    if len(table) == 0:
        return {}
    probabilities = predict_table(
        model, store.iter_crops(table.image_ids), device=device, mean=mean, std=std, count=len(table)
    )
    image_probabilities, final = served_probabilities(
        table, probabilities, pooling=DEFAULT_IMAGE_POOLING, cell_weight=DEFAULT_BLEND_CELL_WEIGHT
    )
    image_map, image_per_class = image_level_map(table.image_labels, image_probabilities)
    metrics: dict = {"val_image_map": image_map, "val_image_ap_per_class": image_per_class}
    if solution is not None:
        cell_map, per_class = competition_map(table, final, solution, cell_labels_of=store.read_cell_labels)
        metrics.update({"val_map": cell_map, "val_ap_per_class": per_class})
    return {key: _finite(value) for key, value in metrics.items()}


def _finite(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def validation_score(metrics: dict) -> float | None:
    """The number early stopping watches: the competition mAP where truth exists, else the cell-level mAP of
    held-out annotated cells (`cell_val_fraction`), else the image-level mAP."""
    for key in ("val_map", "val_cell_map", "val_image_map"):
        if metrics.get(key) is not None:
            return metrics[key]
    return None


def held_out_cell_crops(store: CellStore, table: celldata.CellTable, rows: np.ndarray) -> np.ndarray:
    """uint8 (M, 4, S, S) crops of the table's cells `rows`, read from the store."""
    offsets = np.concatenate([[0], np.cumsum(np.bincount(table.field_index, minlength=len(table.image_ids)))])
    if len(rows) == 0:
        return np.zeros((0, 4, store.size_px, store.size_px), dtype=np.uint8)
    return np.stack(
        [store.read_crop(table.image_ids[table.field_index[r]], int(r - offsets[table.field_index[r]])) for r in rows]
    )


def cell_level_metrics(
    model: nn.Module,
    crops: np.ndarray,
    targets: np.ndarray,
    *,
    device: torch.device,
    mean: list[float],
    std: list[float],
) -> dict:
    """Macro AP (and per class) of the cells' own probabilities against their own classes; {} without cells."""
    if len(crops) == 0:
        return {}
    probabilities = predict_table(model, crops, device=device, mean=mean, std=std)
    cell_map, per_class = image_level_map(targets, probabilities)
    return {"val_cell_map": _finite(cell_map), "val_cell_ap_per_class": _finite(per_class)}


class RunLog:
    """`RUN/log.jsonl`: one JSON object a line (`event`, `time`, ...), appended across resumes; rank 0 only."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, event: str, **values) -> None:
        if self.path is None:
            return
        with open(self.path, "a") as handle:
            handle.write(json.dumps({"event": event, "time": round(time.time(), 3), **values}, default=str) + "\n")


def _table(store: CellStore, image_ids: list[str], image_labels: dict[str, tuple[int, ...]]) -> celldata.CellTable:
    """The cells of `image_ids` as a table whose crops stay in the store (`crops` is None)."""
    index = store.index()
    position = {image_id: row for row, image_id in enumerate(index.image_ids)}
    counts = np.array([index.cell_counts[position[i]] for i in image_ids], dtype=np.int64)
    return celldata.CellTable(
        image_ids=tuple(image_ids),
        image_labels=np.stack([celldata.multi_hot(image_labels[i]) for i in image_ids])
        if image_ids
        else np.zeros((0, NUM_CLASSES), np.float32),
        crops=None,
        field_index=np.repeat(np.arange(len(image_ids), dtype=np.int64), counts),
        cell_ids=store.cell_ids(image_ids),
    )


def _prepare(data_dir, store_path, *, size_px, segmenter, jobs, max_fields, cache_dir) -> None:
    if segmenter is None:
        raise InputError("Preparing a data folder needs a segmenter; pass one, or train from a ready cell store.")
    bars: list[tqdm] = []  # made at the first field, so an early refusal prints no bar

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, desc="Segmenting and cropping", unit="field", file=sys.stderr))
        bars[0].update(done - bars[0].n)

    report = prepare_store(
        data_dir,
        store_path,
        size_px=size_px,
        segmenter=segmenter,
        jobs=jobs,
        max_fields=max_fields,
        masks_dir=cache_dir / "masks",
        progress=progress,
    )
    for bar in bars:
        bar.close()
    for line in report.sentences():
        print(line, file=sys.stderr)


def _available_labels(labels: dict, store: CellStore, max_fields: int | None) -> dict[str, tuple[int, ...]]:
    ids = sorted(labels)[:max_fields] if max_fields else sorted(labels)
    present = set(store.field_ids())
    return {i: labels[i] for i in ids if i in present}


def _build(config: TrainConfig) -> tuple[nn.Module, dict, dict | None]:
    """(model, its architecture config, the init checkpoint's info or None)."""
    if config.init is not None:
        model, info = load_classifier_checkpoint(config.init)
        init_config = info["config"]
        if int(init_config["input_size_px"]) != config.size_px:
            raise InputError(
                f"{Path(config.init).name} takes {init_config['input_size_px']} px crops but the run uses "
                f"{config.size_px} px; pass --size {init_config['input_size_px']}."
            )
        keys = ("architecture", "widths", "dropout", "backbone")
        return model, {k: init_config[k] for k in keys if k in init_config}, info
    try:
        model = build_model(config.arch, dropout=config.dropout, widths=config.widths)
    except ValueError as error:
        raise InputError(str(error)) from None
    if config.pretrained:
        loaded = load_pretrained(model, config.pretrained)
        print(f"Started {config.arch} from {loaded['source']} ({loaded['tensors']} tensors).", file=sys.stderr)
    if isinstance(model, BackboneCellClassifier):
        arch_config = {"architecture": BACKBONE_ARCHITECTURE, "backbone": config.arch, "widths": []}
    else:
        arch_config = {"architecture": CLASSIFIER_ARCHITECTURE, "widths": list(config.widths)}
    return model, {**arch_config, "dropout": config.dropout}, None


def _state_fingerprint(config: TrainConfig, store_path: Path) -> dict:
    """What a resumed run must share with the one it continues."""
    keys = ("size_px", "epochs", "refine_rounds", "refine_epochs", "batch_size", "lr", "arch", "seed", "widths")
    keys += ("samples_per_epoch", "cell_val_fraction")
    return {**{k: _plainish(getattr(config, k)) for k in keys}, "store": str(store_path)}


def _plainish(value):
    return list(value) if isinstance(value, tuple) else value


def train(
    config: TrainConfig,
    *,
    segmenter: Segmenter | SegmenterSpec | None = None,
    progress: Callable[[TrainProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train a classifier as `config` says and save it to `config.out` (see the module's docstring).

    Raises `InputError` with a sentence when the data cannot be used, `CheckpointError` for an
    unusable `init` or `pretrained` file, `TrainingCancelled` when `should_stop` said so.
    """
    start_time = time.perf_counter()
    seed_everything(config.seed)
    torch.set_num_threads(config.threads)
    cluster = Distributed.start(resolve_device(config.device))
    try:
        return _train(config, cluster, segmenter, progress, should_stop, start_time)
    finally:
        cluster.stop()


def _train(config, cluster: Distributed, segmenter, progress, should_stop, start_time) -> TrainResult:
    device = cluster.device
    main = cluster.is_main
    store_path = config.resolved_store
    if config.init is None:
        try:
            check_arch(config.arch)  # before any data is prepared
        except ValueError as error:
            raise InputError(str(error)) from None
    solution = None
    if config.data_dir is not None:
        labels_all = celldata.read_image_labels(config.data_dir / "train.csv")
        solution_path = config.data_dir / "solution.csv"
        if solution_path.is_file():
            solution = {row.image_id: row for row in read_submission(solution_path)}
        if config.cell_labels_from_truth and solution is None:
            raise InputError(f"--cell-labels-from-truth needs {solution_path} (true cell labels); it does not exist.")
        if main:
            _prepare(
                config.data_dir,
                store_path,
                size_px=config.size_px,
                segmenter=segmenter,
                jobs=config.jobs,
                max_fields=config.max_fields,
                cache_dir=config.resolved_cache_dir,
            )
        cluster.barrier()
        store = CellStore.open(store_path)
        image_labels = _available_labels(labels_all, store, config.max_fields)
    else:
        if config.cell_labels_from_truth:
            raise InputError("--cell-labels-from-truth needs a data folder with a solution.csv.")
        store = CellStore.open(store_path)
        index = store.index()
        ids = list(index.image_ids)[: config.max_fields] if config.max_fields else list(index.image_ids)
        image_labels = {i: tuple(int(v) for v in np.flatnonzero(index.image_labels[row])) for row, i in enumerate(ids)}
    if store.size_px != config.size_px:
        raise InputError(f"The cell store {store_path} holds {store.size_px} px crops; pass --size {store.size_px}.")
    if not image_labels:
        raise InputError(f"The cell store {store_path} holds none of the fields to train on; prepare them first.")

    if config.validation_fields is not None:
        val_ids = sorted(i for i in config.validation_fields if i in image_labels)
        train_ids = sorted(i for i in image_labels if i not in set(val_ids))
    else:
        train_ids, val_ids = celldata.stratified_split(
            image_labels, validation_fraction=config.val_fraction, seed=config.seed
        )
    train_table = _table(store, train_ids, image_labels)
    val_table = _table(store, val_ids, image_labels)
    if len(train_table) == 0:
        raise InputError("The training fields have no cells; check the segmentation or the data folder.")
    own_rows, own_targets = store.cell_classes(train_ids)
    val_cell_rows = np.zeros(0, dtype=np.int64)
    val_cell_targets = np.zeros((0, NUM_CLASSES), dtype=np.float32)
    if config.cell_val_fraction > 0 and len(own_rows) and not config.cell_labels_from_truth:
        held = celldata.stratified_cell_split(
            own_targets, validation_fraction=config.cell_val_fraction, seed=config.seed
        )
        kept = np.setdiff1d(np.arange(len(own_rows)), held)
        val_cell_rows, val_cell_targets = own_rows[held], own_targets[held]
        own_rows, own_targets = own_rows[kept], own_targets[kept]
    if main:
        print(
            f"{len(train_ids)} training fields ({len(train_table)} cells, {len(own_rows)} with cell labels), "
            f"{len(val_ids)} validation fields ({len(val_table)} cells)"
            + (f", {len(val_cell_rows)} annotated cells held out for validation" if len(val_cell_rows) else ""),
            file=sys.stderr,
        )

    model, arch_config, init_info = _build(config)
    if init_info is not None:
        mean, std = list(init_info["config"]["mean"]), list(init_info["config"]["std"])
    else:
        mean, std = store_channel_statistics(store, train_table, sample=2000, rng=np.random.default_rng(config.seed))
    model = model.to(device, memory_format=torch.channels_last)

    if config.cell_labels_from_truth:
        targets = celldata.truth_targets(train_table, solution, cell_labels_of=store.read_cell_labels)
        targets = targets.astype(np.float16)
        own_rows = np.zeros(0, dtype=np.int64)  # the truth replaces every label
        label_source = "true cell labels (solution.csv), segmented cells matched at IoU >= 0.5"
        rounds = 0
    else:
        # float16 holds 0, 1 and NaN exactly, in half the memory: this array has a row per cell.
        targets = train_table.image_labels.astype(np.float16)[train_table.field_index]
        targets[own_rows] = own_targets
        targets[val_cell_rows] = np.nan  # held-out annotated cells: validated on, never trained on
        label_source = (
            f"image labels inherited by every cell, refined {config.refine_rounds} time(s) with the model's own "
            "predictions" + (f"; {len(own_rows)} cells with their own cell labels" if len(own_rows) else "")
        )
        rounds = config.refine_rounds
    stages = [("round 0", config.epochs)] + [(f"round {r}", config.refine_epochs) for r in range(1, rounds + 1)]
    epochs_overall = sum(e for _s, e in stages)

    run_dir = config.resolved_run_dir
    state_path = run_dir / "state.pt"
    log = RunLog(run_dir / "log.jsonl" if main else None)
    fingerprint = _state_fingerprint(config, store_path)
    resumed = None
    if config.resume and state_path.is_file():
        resumed = torch.load(state_path, map_location="cpu", weights_only=True)
        if resumed.get("version") != STATE_VERSION or resumed.get("fingerprint") != fingerprint:
            raise InputError(
                f"{state_path} belongs to a run with other settings ({resumed.get('fingerprint')}); resume with "
                "the same options, or start afresh without --resume."
            )
    elif config.resume and main:
        print(f"Nothing to resume in {run_dir}; starting afresh.", file=sys.stderr)

    generator = torch.Generator().manual_seed(config.seed)
    history: list[dict] = []
    stage_index, epoch_done = 0, 0
    best: dict = {"score": None, "epoch": 0, "weights": None}
    epochs_run, stopped_early, elapsed_before = 0, False, 0.0
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        mean, std = resumed["mean"], resumed["std"]
        targets = resumed["targets"].numpy()
        history = resumed["history"]
        stage_index, epoch_done = resumed["stage_index"], resumed["epoch_done"]
        epochs_run, stopped_early = resumed["epochs_run"], resumed["stopped_early"]
        elapsed_before = resumed["elapsed_s"]
        best = {
            "score": resumed["best_score"],
            "epoch": resumed["best_epoch"],
            "weights": resumed.get("best_model"),
            "metrics": resumed.get("best_metrics"),
        }
        generator.set_state(resumed["generator"])
        torch.set_rng_state(resumed["torch_rng"])
        log.write("resume", stage=stages[stage_index][0], epoch_done=epoch_done)
        if main:
            print(f"Resuming {stages[stage_index][0]} after epoch {epoch_done} from {state_path}.", file=sys.stderr)
    else:
        log.write(
            "start", config=asdict(config), cells=len(train_table), fields=len(train_ids), world=cluster.world_size
        )
    run_start = time.perf_counter() - elapsed_before
    trained = DistributedDataParallel(model) if cluster.enabled else model
    val_cell_crops = held_out_cell_crops(store, train_table, val_cell_rows) if main else None

    def validation_metrics() -> dict:
        """The held-out fields' metrics and the held-out annotated cells' (rank 0 only)."""
        metrics = evaluate(model, val_table, solution, store=store, device=device, mean=mean, std=std)
        if len(val_cell_rows):
            metrics.update(
                cell_level_metrics(model, val_cell_crops, val_cell_targets, device=device, mean=mean, std=std)
            )
        return metrics

    scaler_enabled = device.type == "cuda"

    while stage_index < len(stages):
        stage, epochs = stages[stage_index]
        if epoch_done == 0 and stage_index > 0 and not _stage_started(history, stage_index):
            probabilities = None
            if main:
                probabilities = predict_table(
                    model, store.iter_crops(train_table.image_ids), device=device, mean=mean, std=std,
                    count=len(train_table),
                )  # fmt: skip
            probabilities = cluster.broadcast(probabilities)
            refined = celldata.refine_targets(train_table, probabilities)
            refined = refined.astype(np.float16)
            refined[own_rows] = own_targets  # annotated cells keep their own labels
            refined[val_cell_rows] = np.nan
            changed = float(((refined != targets) & ~np.isnan(targets)).any(axis=1).mean())
            targets = refined
            history.append({"round": stage_index, "losses": [], "changed_cell_fraction": changed})
            best = {"score": None, "epoch": 0, "weights": None}
            log.write("refine", stage=stage, changed_cell_fraction=changed)
            if main:
                print(f"{stage}: relabelled; {changed:.1%} of cells changed targets", file=sys.stderr)
        elif stage_index == 0 and not history:
            history.append({"round": 0, "losses": []})
            if config.init is not None and config.patience and main:
                # The starting model is epoch 0: if no epoch beats it on the held-out cells or fields, its
                # weights are given back, so fine-tuning never ends worse than it by the validation score.
                start_metrics = validation_metrics()
                start_score = validation_score(start_metrics)
                history[0]["start"] = start_metrics
                if start_score is not None:
                    best = {"score": start_score, "epoch": 0, "weights": _weights_copy(model), "metrics": start_metrics}
                    log.write("start_model", **start_metrics)
                    print(f"{stage} epoch 0 (the starting model): validation {start_score:.4f}", file=sys.stderr)
        usable = np.flatnonzero(~np.isnan(targets).any(axis=1))
        if len(usable) == 0:
            raise InputError("No training cell has a usable label; check the labels file.")
        weights = celldata.class_balanced_weights(targets[usable])
        sampler = DistributedBalancedSampler(
            weights, num_samples=config.samples_per_epoch or len(usable), rank=cluster.rank, world_size=cluster.world_size,
            seed=config.seed * 1000 + stage_index,
        )  # fmt: skip
        dataset = StoreCellDataset(
            store,
            train_table.image_ids,
            np.bincount(train_table.field_index, minlength=len(train_ids)),
            targets,
            usable,
        )
        per_rank_batch = max(1, config.batch_size // cluster.world_size)
        loader = DataLoader(
            dataset,
            batch_size=per_rank_batch,
            sampler=sampler,
            num_workers=config.workers,
            drop_last=len(sampler) > per_rank_batch,
            persistent_workers=False,
        )
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.lr, total_steps=max(1, epochs * len(loader)), pct_start=0.15
        )
        scaler = torch.amp.GradScaler("cuda") if scaler_enabled else None
        if resumed is not None and resumed["stage_index"] == stage_index:
            optimizer.load_state_dict(resumed["optimizer"])
            scheduler.load_state_dict(resumed["scheduler"])
            if scaler is not None and resumed.get("scaler"):
                scaler.load_state_dict(resumed["scaler"])
        resumed = None
        for epoch in range(epoch_done + 1, epochs + 1):
            sampler.set_epoch(epoch)
            epoch_start = time.perf_counter()
            loss, seen = train_one_epoch(
                trained, loader, optimizer=optimizer, scheduler=scheduler, scaler=scaler, device=device,
                mean=mean, std=std, generator=generator, description=f"{stage} epoch {epoch}/{epochs}",
                should_stop=should_stop if not cluster.enabled else None, show_bar=main,
            )  # fmt: skip
            if seen < 0:
                log.write("cancelled", stage=stage, epoch=epoch)
                raise TrainingCancelled(state_path)
            loss = cluster.all_sum(loss) / cluster.world_size
            epoch_s = time.perf_counter() - epoch_start
            epochs_run += 1
            metrics = validation_metrics() if main else {}
            history[-1]["losses"].append(loss)
            history[-1].update(metrics)
            done_overall = sum(e for _s, e in stages[:stage_index]) + epoch
            elapsed = time.perf_counter() - run_start
            eta = elapsed / max(epochs_run, 1) * (epochs_overall - done_overall)
            value = validation_score(metrics)
            improved = value is not None and (best["score"] is None or value > best["score"])
            if improved and config.patience:
                best = {"score": value, "epoch": epoch, "weights": _weights_copy(model), "metrics": metrics}
            stop_stage = bool(
                config.patience and best["score"] is not None and epoch - best["epoch"] >= config.patience
            )
            stop_stage = cluster.broadcast(stop_stage)
            # At the stage's last epoch, an earlier best one (the starting model's epoch 0 included) is kept too.
            keep_best = bool(
                config.patience and epoch == epochs and best["score"] is not None and best["epoch"] != epoch
            )
            keep_best = cluster.broadcast(keep_best)
            if main:
                _report_epoch(stage, epoch, epochs, loss, metrics, epoch_s, eta, seen * cluster.world_size)
                log.write(
                    "epoch", stage=stage, epoch=epoch, epochs=epochs, epoch_overall=done_overall,
                    epochs_overall=epochs_overall, loss=loss, elapsed_s=round(elapsed, 2), eta_s=round(eta, 1),
                    cells_per_s=round(seen * cluster.world_size / max(epoch_s, 1e-9), 2), **metrics,
                )  # fmt: skip
                if progress is not None:
                    progress(
                        TrainProgress(stage, epoch, epochs, done_overall, epochs_overall, loss, metrics, elapsed, eta)
                    )
            if stop_stage or keep_best:
                if main and best["weights"] is not None:
                    model.load_state_dict(best["weights"])
                    history[-1].update(best.get("metrics") or {})
                cluster.sync_module(model)  # every rank continues from rank 0's best weights
                history[-1]["best_epoch"] = best["epoch"]
                if stop_stage:
                    history[-1]["stopped_early_after_epoch"] = epoch
                    stopped_early = True
                log.write(
                    "early_stop" if stop_stage else "best_kept", stage=stage, epoch=epoch, best_epoch=best["epoch"],
                    best_score=best["score"],
                )  # fmt: skip
                if main:
                    reason = (
                        f"no better validation score for {config.patience} epoch(s)" if stop_stage else "last epoch"
                    )
                    which = "the starting model (epoch 0)" if best["epoch"] == 0 else f"epoch {best['epoch']}"
                    print(f"{stage}: {reason}; keeping {which} ({best['score']:.4f}).", file=sys.stderr)
            elif config.patience and epoch == epochs and best["score"] is not None:
                history[-1]["best_epoch"] = epoch  # the last epoch is the best one
            next_stage, next_epoch = (stage_index + 1, 0) if stop_stage or epoch == epochs else (stage_index, epoch)
            if main:
                save_atomically(
                    {
                        "version": STATE_VERSION,
                        "fingerprint": fingerprint,
                        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict() if scaler is not None else {},
                        "stage_index": next_stage,
                        "epoch_done": next_epoch,
                        "targets": torch.from_numpy(targets),
                        "mean": mean,
                        "std": std,
                        "history": history,
                        "epochs_run": epochs_run,
                        "stopped_early": stopped_early,
                        "elapsed_s": time.perf_counter() - run_start,
                        "best_score": best["score"],
                        "best_epoch": best["epoch"],
                        "best_model": best["weights"],
                        "best_metrics": best.get("metrics"),
                        "generator": generator.get_state(),
                        "torch_rng": torch.get_rng_state(),
                    },
                    state_path,
                )
            if stop_stage:
                break
        stage_index, epoch_done = stage_index + 1, 0
        if should_stop is not None and not cluster.enabled and should_stop():
            log.write("cancelled", stage=stage, epoch=epochs)
            raise TrainingCancelled(state_path)

    final = {k: v for k, v in history[-1].items() if k.startswith("val_")}
    final.update({f"start_{k}": v for k, v in history[0].get("start", {}).items()})
    if history[0].get("start") is not None:
        final["kept_starting_model"] = len(history) == 1 and history[0].get("best_epoch") == 0
    if main:
        for entry in history:
            shown = {k: round(v, 4) for k, v in entry.items() if k.startswith("val_") and isinstance(v, float)}
            print(f"round {entry['round']}: {shown}", file=sys.stderr)
        _save_final(
            config, model, store, train_table, arch_config, mean, std, history, final, image_labels, train_ids,
            val_ids, val_table, label_source, rounds, device, cluster, start_time, epochs_run, stopped_early,
        )  # fmt: skip
        log.write("done", checkpoint=str(config.out), epochs_run=epochs_run, **final)
    cluster.barrier()
    return TrainResult(
        checkpoint=config.out, metrics=final, history=history, epochs_run=epochs_run, stopped_early=stopped_early
    )


def _weights_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _stage_started(history: list[dict], stage_index: int) -> bool:
    return any(entry.get("round") == stage_index for entry in history)


def _report_epoch(stage, epoch, epochs, loss, metrics, epoch_s, eta, cells) -> None:
    shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
    print(
        f"{stage} epoch {epoch}/{epochs}: loss {loss:.4f}" + (f", {shown}" if shown else "")
        + f"; {epoch_s:.1f} s, {cells / max(epoch_s, 1e-9):.0f} cells/s, ETA {_duration(eta)}",
        file=sys.stderr,
    )  # fmt: skip
    per_class = metrics.get("val_ap_per_class") or metrics.get("val_image_ap_per_class")
    if per_class:
        text = ", ".join(f"{CLASS_NAMES[i]} {ap:.2f}" for i, ap in enumerate(per_class) if ap is not None)
        print(f"  validation AP per class: {text}", file=sys.stderr)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _save_final(
    config, model, store, train_table, arch_config, mean, std, history, final, image_labels, train_ids, val_ids,
    val_table, label_source, rounds, device, cluster, start_time, epochs_run, stopped_early,
) -> None:  # fmt: skip
    familiarity = describe_training_cells(
        model, train_table, device=device, mean=mean, std=std, store=store,
        max_cells=config.familiarity_max_cells, seed=config.seed,
    )  # fmt: skip
    elapsed = time.perf_counter() - start_time
    counts = np.zeros(NUM_CLASSES, dtype=np.int64)
    for labels in image_labels.values():
        counts[list(labels)] += 1
    save_classifier_checkpoint(
        config.out,
        model=model,
        config={
            **arch_config,
            "input_size_px": config.size_px,
            "mean": mean,
            "std": std,
            "blend_cell_weight": DEFAULT_BLEND_CELL_WEIGHT,
            "image_pooling": DEFAULT_IMAGE_POOLING,
            "preprocessing": PREPROCESSING,
        },
        metrics={**final, "history": history},
        data={
            "source": str(config.data_dir or config.resolved_store),
            "fields": len(image_labels),
            "fields_sha256_16": celldata.describe_fields(list(image_labels)),
            "training_fields": len(train_ids),
            "validation_fields": len(val_ids),
            "training_cells": len(train_table),
            "validation_cells": len(val_table),
            "image_label_counts": {CLASS_NAMES[i]: int(c) for i, c in enumerate(counts)},
            "cell_labels": label_source,
            "segmentation": _segmentation_of(store, train_ids),
            "crop_size_px": config.size_px,
            "seed": config.seed,
            "epochs": config.epochs,
            "epochs_run": epochs_run,
            "stopped_early": stopped_early,
            "refine_rounds": rounds,
            "refine_epochs": config.refine_epochs if rounds else 0,
            "init": Path(config.init).name if config.init else None,
            "pretrained": (
                config.pretrained if config.pretrained in (None, "imagenet") else Path(config.pretrained).name
            ),
            "processes": cluster.world_size,
            "device": str(device),
            "training_time_s": round(elapsed, 1),
            "command": config.command,
        },
        familiarity=familiarity,
    )
    print(f"Saved {config.out} after {elapsed / 60:.1f} min.", file=sys.stderr)


def _segmentation_of(store: CellStore, image_ids: list[str]) -> str:
    return store.read_field_attrs(image_ids[0]).get("segmentation", "") if image_ids else ""
