"""Training jobs: a classifier trained from the product, from annotated cells, labelled jobs or both.

`cells.training_jobs` checks a request and queues it; `training_run` (the body of the task
`cells.tasks.train_classifier`, on the `training` queue) writes the chosen cells into an
`ml.training.store.CellStore` and runs `ml.training.classifier.train` on it; the training loop is
ml's, this module only gathers data, reports progress and registers the result:

- annotated cells (`cells.curation`) train on their own classes (cell-level labels); cells marked
  not a cell or badly outlined are left out, and so are the unannotated cells of fields without
  image labels;
- fields uploaded with labels give every other cell their labels, weakly, refined by the model's
  own predictions (`refine_rounds`, as `python -m ml train`).

Progress (stage, epoch, loss, validation score) is written after every epoch; a cancel request is
polled between batches. The checkpoint is registered as a private classifier of the owner
(`registry.model_register_trained`) with a card written from its data and metrics.
"""

import logging
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.utils import timezone

from cells import ml_config, processing, registry
from cells.models import CellAnnotation, Field, Job, TrainingJob
from ml.checkpoints import CheckpointError
from ml.classifier.network import COMPACT
from ml.constants import CLASS_NAMES
from ml.io import InputError, read_labels_png

logger = logging.getLogger(__name__)

DEFAULT_SIZE_PX = 96
MAX_EPOCHS = 50
MAX_REFINE_ROUNDS = 3
CANCEL_POLL_S = 1.0
# The one-cycle schedule's peak learning rate: ml's default for a new network, the same for fine-tuning
# (a lower one barely moved the shipped model on a few hundred annotated cells: python -m bench.curation).
NEW_NETWORK_LR = 3e-3
FINE_TUNE_LR = 3e-3
# Annotated cells held out (stratified by class) to score every epoch at cell level, when there are enough;
# the best epoch is kept once the score has not improved for PATIENCE epochs.
CELL_VALIDATION_FRACTION = 0.15
MIN_CELLS_TO_VALIDATE = 20
PATIENCE = 12
# Cells drawn per epoch (class-balanced, augmented) at least, so a few hundred annotated cells give a few batches.
MIN_SAMPLES_PER_EPOCH = 256


@dataclass(frozen=True)
class TrainingData:
    """What a training request would learn from."""

    annotated_cells: int  # cells with classes of their own
    labelled_fields: int  # finished fields with image labels
    fields: int  # fields that give any cell

    def as_dict(self) -> dict:
        return {
            "annotated_cells": self.annotated_cells,
            "labelled_fields": self.labelled_fields,
            "fields": self.fields,
        }


def _cell_calls(fields: Sequence[Field]) -> dict[int, dict[int, CellAnnotation]]:
    """field id -> {cell label: its current annotation} for every annotated cell of the fields."""
    rows = (
        CellAnnotation.objects.filter(field__in=fields, undone_at__isnull=True, cell__isnull=False)
        .select_related("cell")
        .order_by("created_at", "id")
    )
    calls: dict[int, dict[int, CellAnnotation]] = {}
    for annotation in rows:
        calls.setdefault(annotation.field_id, {})[annotation.cell.label] = annotation  # the newest wins
    return calls


def _plan(
    *, source: str, jobs: Sequence[Job]
) -> tuple[list[Field], dict[int, dict[int, CellAnnotation]], TrainingData]:
    fields = list(Field.objects.filter(job__in=jobs, status=Field.Status.DONE).exclude(cell_labels="").order_by("id"))
    calls = _cell_calls(fields) if source != TrainingJob.Source.JOBS else {}
    use_labels = source != TrainingJob.Source.CELLS
    annotated = sum(
        1 for by_label in calls.values() for call in by_label.values() if call.kind == CellAnnotation.Kind.CLASSES
    )
    labelled = [field for field in fields if use_labels and field.image_labels and field.cells.exists()]
    chosen = [
        field
        for field in fields
        if field in labelled
        or any(call.kind == CellAnnotation.Kind.CLASSES for call in calls.get(field.pk, {}).values())
    ]
    return chosen, calls, TrainingData(annotated_cells=annotated, labelled_fields=len(labelled), fields=len(chosen))


def training_data_for(*, source: str, jobs: Sequence[Job]) -> TrainingData:
    return _plan(source=source, jobs=jobs)[2]


def no_cells_sentence(source: str) -> str:
    if source == TrainingJob.Source.CELLS:
        return (
            "The chosen jobs have no annotated cells with classes to train on (cells marked not a cell or badly "
            "outlined do not count); annotate some cells first, or train from labelled jobs."
        )
    if source == TrainingJob.Source.JOBS:
        return (
            "None of the chosen jobs has a finished field with labels and cells to train on; upload fields with "
            "their labels (a train.csv, or labels typed on the upload form), or train from annotated cells."
        )
    return (
        "The chosen jobs have neither annotated cells nor finished fields with labels, so there are no usable cells "
        "to train on; annotate cells or upload fields with their labels first."
    )


def training_job_fail(*, training_job_id: int, reason: str) -> None:
    TrainingJob.objects.filter(pk=training_job_id).exclude(status__in=TrainingJob.FINISHED).update(
        status=TrainingJob.Status.FAILED, error=reason, finished_at=timezone.now()
    )


def _store_id(field: Field) -> str:
    return f"job{field.job_id}-field{field.pk}"


def _write_store(store_path: Path, *, size_px: int, fields, calls, use_labels: bool) -> None:
    from ml.training.store import CellStore

    store = CellStore.create(store_path, size_px=size_px)
    for field in fields:
        with field.cell_labels.open("rb") as handle:
            cell_labels = read_labels_png(handle).astype(np.int64)
        by_label = calls.get(field.pk, {})
        own = {
            label: tuple(call.classes) for label, call in by_label.items() if call.kind == CellAnnotation.Kind.CLASSES
        }
        excluded = [label for label, call in by_label.items() if call.kind != CellAnnotation.Kind.CLASSES]
        image_labels = tuple(field.image_labels or ()) if use_labels else ()
        if not image_labels:
            # Without field labels only the annotated cells say anything.
            cell_labels[~np.isin(cell_labels, list(own))] = 0
        if excluded:
            cell_labels[np.isin(cell_labels, excluded)] = 0
        images = processing.read_stored_field(field)
        store.add_field(
            _store_id(field),
            images,
            cell_labels,
            image_labels=image_labels,
            cell_classes=own,
            segmentation=field.segmentation_backend,
            replace=True,
        )


SCORE_NAMES = {
    "val_map": "cell-level mAP",
    "val_cell_map": "cell-level macro AP",
    "val_image_map": "image-level macro AP",
}


def validation_key(metrics: dict) -> str | None:
    """The validation metric training watches (`ml.training.classifier.validation_score`), by name."""
    return next((key for key in SCORE_NAMES if metrics.get(key) is not None), None)


def training_outcome(metrics: dict) -> dict:
    """What the training page says of a finished training: its validation score and the starting model's on
    the same held-out cells or fields, and whether no epoch beat the starting model."""
    key = validation_key(metrics)
    if key is None:
        return {}
    return {
        "score_name": SCORE_NAMES[key],
        "held_out": "annotated cells" if key == "val_cell_map" else "fields",
        "score": round(metrics[key], 4),
        "start_score": None if metrics.get(f"start_{key}") is None else round(metrics[f"start_{key}"], 4),
        "kept_starting_model": bool(metrics.get("kept_starting_model")),
    }


def _card(training_job: TrainingJob, *, metrics: dict, data: dict, elapsed_s: float) -> tuple[str, str]:
    """(summary line, markdown card) of a trained model, from its data and validation metrics."""
    key = validation_key(metrics)
    score = metrics[key] if key else None
    score_name = SCORE_NAMES.get(key, SCORE_NAMES["val_image_map"])
    outcome = training_outcome(metrics)
    if outcome.get("start_score") is None:
        compared = ""
    elif outcome["kept_starting_model"]:
        compared = (
            f" No epoch did better than the starting model ({outcome['start_score']:.3f} on the same held-out "
            f"{outcome['held_out']}), so this model keeps its weights."
        )
    else:
        compared = (
            f" The starting model scored {outcome['start_score']:.3f} on the same held-out {outcome['held_out']}."
        )
    start = f"fine-tuned from {training_job.base_model.label}" if training_job.base_model else (
        f"trained from the {training_job.backbone or COMPACT} backbone"
    )  # fmt: skip
    jobs = ", ".join(str(job) for job in training_job.jobs.all())
    summary = (
        f"Trained in hpaweb by {training_job.owner.get_username()} from {data['annotated_cells']} annotated cells "
        f"and {data['labelled_fields']} labelled fields; "
        + (f"validation {score_name} {score:.3f}." if score is not None else "no validation fields were held out.")
        + compared
    )
    per_class = (
        metrics.get("val_ap_per_class") or metrics.get("val_cell_ap_per_class") or metrics.get("val_image_ap_per_class")
    ) or []
    rows = "\n".join(
        f"| {CLASS_NAMES[index]} | {'' if ap is None else f'{ap:.3f}'} |" for index, ap in enumerate(per_class)
    )
    card = (
        f"# {training_job.name}\n\n"
        f"A cell classifier {start} in hpaweb, by {training_job.owner.get_username()} on "
        f"{timezone.now():%Y-%m-%d}, in {elapsed_s / 60:.1f} min.\n\n"
        f"## Data\n\nFrom the jobs {jobs}: {data['annotated_cells']} cells annotated by hand (cell-level labels) and "
        f"{data['labelled_fields']} fields with image-level labels (weak; every other cell of such a field starts "
        f"from its labels, refined {training_job.refine_rounds} time(s) by the model's own predictions). "
        f"{data['fields']} fields in all. Only the users who made these annotations and labels have checked them.\n\n"
        f"## Validation\n\n"
        + (
            f"{score_name}: {score:.3f} on held-out {outcome.get('held_out')}.{compared}\n\n"
            if score is not None
            else "No fields were held out.\n\n"
        )
        + (f"| class | AP |\n| --- | ---: |\n{rows}\n" if rows else "")
        + "\n## Limits\n\nTrained on few cells from one lab's fields: check its calls on new fields before trusting them.\n"
    )
    return summary, card


def training_run(*, training_job_id: int) -> None:
    """The training task's body: claim a queued training job, train it and register the model."""
    from ml.training.classifier import TrainConfig, TrainingCancelled, train

    claimed = TrainingJob.objects.filter(pk=training_job_id, status=TrainingJob.Status.QUEUED).update(
        status=TrainingJob.Status.RUNNING, started_at=timezone.now(), progress={"stage": "preparing"}
    )
    if not claimed:
        logger.info("Training job %s is not queued (cancelled, finished or running elsewhere)", training_job_id)
        return
    training_job = TrainingJob.objects.select_related("owner", "base_model").get(pk=training_job_id)
    workdir = Path(tempfile.mkdtemp(prefix="hpaweb-training-"))
    started = time.perf_counter()
    last_poll = [0.0, False]

    def should_stop() -> bool:
        now = time.perf_counter()
        if now - last_poll[0] >= CANCEL_POLL_S:
            last_poll[0] = now
            last_poll[1] = TrainingJob.objects.filter(pk=training_job_id, cancel_requested=True).exists()
        return last_poll[1]

    def progress(report) -> None:
        metrics = {key: value for key, value in report.metrics.items() if not key.endswith("per_class")}
        entry = {
            "stage": report.stage,
            "epoch": report.epoch,
            "epochs": report.epochs,
            "epoch_overall": report.epoch_overall,
            "epochs_overall": report.epochs_overall,
            "loss": round(float(report.loss), 5),
            "validation": metrics,
            **({"score_name": SCORE_NAMES[key], "score": metrics[key]} if (key := validation_key(metrics)) else {}),
            "elapsed_s": round(report.elapsed_s, 1),
            "eta_s": round(report.eta_s, 1),
        }
        training_job.history.append(entry)
        TrainingJob.objects.filter(pk=training_job_id).update(progress=entry, history=training_job.history)

    try:
        jobs = list(training_job.jobs.all())
        fields, calls, data = _plan(source=training_job.source, jobs=jobs)
        if data.fields == 0:
            raise InputError(no_cells_sentence(training_job.source))
        init = ml_config.model_local_path(training_job.base_model) if training_job.base_model else None
        size_px = training_job.base_model.input_size_px if training_job.base_model else DEFAULT_SIZE_PX
        _write_store(
            workdir / "cells.store",
            size_px=size_px or DEFAULT_SIZE_PX,
            fields=fields,
            calls=calls,
            use_labels=training_job.source != TrainingJob.Source.CELLS,
        )
        TrainingJob.objects.filter(pk=training_job_id).update(progress={"stage": "training", **data.as_dict()})
        only_cells = training_job.source == TrainingJob.Source.CELLS or data.labelled_fields == 0
        validate_cells = data.annotated_cells >= MIN_CELLS_TO_VALIDATE
        config = TrainConfig(
            store=workdir / "cells.store",
            out=workdir / "model.pt",
            arch=training_job.backbone or COMPACT,
            init=init,
            size_px=size_px or DEFAULT_SIZE_PX,
            epochs=training_job.epochs,
            refine_rounds=0 if only_cells else training_job.refine_rounds,
            refine_epochs=max(1, min(4, training_job.epochs)),
            # Fields of annotated cells alone are not held out whole: some of their cells are, instead.
            val_fraction=0.0 if only_cells and validate_cells else 0.15,
            cell_val_fraction=CELL_VALIDATION_FRACTION if validate_cells else 0.0,
            patience=PATIENCE if validate_cells else None,
            samples_per_epoch=max(data.annotated_cells, MIN_SAMPLES_PER_EPOCH) if only_cells else None,
            lr=FINE_TUNE_LR if init is not None else NEW_NETWORK_LR,
            device=ml_config.training_device(),
            threads=ml_config.training_threads(),
            run_dir=workdir / "run",
            command=f"hpaweb training job {training_job_id}",
        )
        result = train(config, progress=progress, should_stop=should_stop)
        elapsed = time.perf_counter() - started
        summary, card = _card(training_job, metrics=result.metrics, data=data.as_dict(), elapsed_s=elapsed)
        model = registry.model_register_trained(
            owner=training_job.owner,
            path=result.checkpoint,
            name=training_job.name,
            version=f"t{training_job_id}",
            summary=summary,
            card=card,
            training_data={
                "hpaweb_training_job": training_job_id,
                **data.as_dict(),
                "training_time_s": round(elapsed, 1),
            },
        )
        TrainingJob.objects.filter(pk=training_job_id).update(
            status=TrainingJob.Status.DONE,
            result_model=model,
            finished_at=timezone.now(),
            progress={
                **TrainingJob.objects.get(pk=training_job_id).progress,
                "stage": "done",
                "outcome": training_outcome(result.metrics),
            },
        )
    except TrainingCancelled:
        TrainingJob.objects.filter(pk=training_job_id).update(
            status=TrainingJob.Status.CANCELLED, finished_at=timezone.now()
        )
    except (InputError, CheckpointError) as error:
        training_job_fail(training_job_id=training_job_id, reason=f"Training could not start: {error}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
