"""Training jobs as the pages and the API start them: check a request, queue it, cancel it, read it.

The training itself runs in `cells.training` (the task `cells.tasks.train_classifier`, on the
`training` queue). A request is refused with a sentence when it names a job the user may not train
on (their own, or one an administrator shared: `cells.curation.jobs_usable_for_training`), a model
they may not start from, or data without usable cells.
"""

import logging
from collections.abc import Sequence

from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from django.utils import timezone

from cells import curation, registry
from cells.models import RegisteredModel, TrainingJob
from cells.tasks import train_classifier
from cells.training import MAX_EPOCHS, MAX_REFINE_ROUNDS, no_cells_sentence, training_data_for, training_job_fail
from ml.classifier.network import COMPACT

logger = logging.getLogger(__name__)


def _check_backbone(backbone: str) -> str:
    backbone = backbone.strip() or COMPACT
    if backbone == COMPACT:
        return backbone
    import timm

    if not timm.is_model(backbone):
        raise ValidationError(
            f"There is no backbone called {backbone!r}; use compact or a timm model name such as efficientnet_lite0 "
            "or resnet18."
        )
    return backbone


@transaction.atomic
def training_job_create(
    *,
    owner: AbstractBaseUser,
    job_ids: Sequence[int],
    source: str = TrainingJob.Source.CELLS,
    name: str = "",
    base_model_id: int | None = None,
    backbone: str = "",
    epochs: int = 6,
    refine_rounds: int = 1,
) -> TrainingJob:
    """Check a training request and queue it; a request with nothing to learn from is refused."""
    if source not in TrainingJob.Source.values:
        raise ValidationError(f"Train from one of {', '.join(TrainingJob.Source.values)}; got {source!r}.")
    if not job_ids:
        raise ValidationError("Choose at least one job whose annotated cells or labels to train on.")
    usable = curation.jobs_usable_for_training(user=owner)
    jobs = list(usable.filter(pk__in=job_ids))
    missing = sorted(set(job_ids) - {job.pk for job in jobs})
    if missing:
        raise ValidationError(
            f"There is no job with id {missing[0]} you may train on; choose your own jobs or ones an administrator "
            "shared with you."
        )
    if not 1 <= epochs <= MAX_EPOCHS:
        raise ValidationError(f"Choose between 1 and {MAX_EPOCHS} epochs.")
    if not 0 <= refine_rounds <= MAX_REFINE_ROUNDS:
        raise ValidationError(f"Choose between 0 and {MAX_REFINE_ROUNDS} refinement rounds.")
    base_model = None
    if base_model_id is not None:
        base_model = registry.classifiers_for(owner).filter(pk=base_model_id).first()
        if base_model is None:
            raise ValidationError(f"There is no classifier with id {base_model_id} that you can use to start from.")
        if base_model.format != RegisteredModel.Format.HPAWEB:
            raise ValidationError(
                f"{base_model.label} is a {base_model.get_format_display()}; only hpaweb checkpoints can be "
                "fine-tuned. Start from one of those, or from a backbone."
            )
        backbone = ""
    else:
        backbone = _check_backbone(backbone)
    data = training_data_for(source=source, jobs=jobs)
    if data.fields == 0:
        raise ValidationError(no_cells_sentence(source))
    training_job = TrainingJob.objects.create(
        owner=owner,
        name=(name.strip() or f"Trained by {owner.get_username()} {timezone.now():%Y-%m-%d %H:%M}")[:200],
        source=source,
        base_model=base_model,
        backbone=backbone,
        epochs=epochs,
        refine_rounds=refine_rounds,
        data_summary=data.as_dict(),
        progress={"stage": "queued"},
    )
    training_job.jobs.set(jobs)
    transaction.on_commit(lambda: _enqueue(training_job.pk))
    return training_job


def _enqueue(training_job_id: int) -> None:
    try:
        train_classifier.delay(training_job_id)
    except Exception as error:  # the broker is down: say so on the job instead of leaving it queued
        logger.warning("Training job %s could not be queued: %s", training_job_id, error)
        training_job_fail(
            training_job_id=training_job_id,
            reason="The training queue could not be reached, so the training did not start; start it again in a "
            "minute, or tell the administrator if this goes on.",
        )


@transaction.atomic
def training_job_cancel(*, user: AbstractBaseUser, training_job: TrainingJob) -> TrainingJob:
    """Ask a queued or running training to stop; a queued one is cancelled at once."""
    training_job = TrainingJob.objects.select_for_update().get(pk=training_job.pk)
    if training_job.owner_id != user.pk:
        raise ValidationError("Only the owner of a training job cancels it.")
    if training_job.is_finished:
        raise ValidationError(f"This training job is {training_job.get_status_display().lower()} already.")
    training_job.cancel_requested = True
    if training_job.status == TrainingJob.Status.QUEUED:
        training_job.status = TrainingJob.Status.CANCELLED
        training_job.finished_at = timezone.now()
        training_job.progress = {**training_job.progress, "stage": "cancelled"}
    training_job.save()
    return training_job


def training_job_list(*, user: AbstractBaseUser) -> QuerySet[TrainingJob]:
    """The user's training jobs, newest first."""
    return TrainingJob.objects.filter(owner=user).select_related("base_model", "result_model")


def training_job_get(*, user: AbstractBaseUser, training_job_id: int) -> TrainingJob:
    return get_object_or_404(training_job_list(user=user), pk=training_job_id)
