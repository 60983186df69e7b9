"""Training jobs: requests checked and refused with sentences, a real (tiny) training through ml's code,
progress, cancel, failure, the result registered privately and usable for jobs."""

import pytest

from cells import curation, intake, processing, registry, training, training_jobs
from cells.models import JobShare, RegisteredModel, TrainingJob

pytestmark = pytest.mark.django_db


@pytest.fixture
def processed_field(stored_field, ml_settings, tiny_classifier_file):
    """A processed field of four cells, classified by a tiny checkpoint (the installation's default here),
    which training jobs fine-tune in a second or two."""
    ml_settings.ML_MODEL_PATH = str(tiny_classifier_file)
    field = stored_field()
    processing.field_process(field_id=field.pk)
    field.refresh_from_db()
    return field


def _annotate(owner, field, classes_by_label):
    for label, classes in classes_by_label.items():
        cell = field.cells.get(label=label)
        curation.annotations_create(user=owner, calls=[curation.CellCall(cell=cell)], kind="classes", classes=classes)


def test_a_request_without_usable_cells_is_refused_and_nothing_is_stored(processed_field, owner_api):
    # One cell marked "not a cell" gives nothing to learn from.
    cell = processed_field.cells.get(label=1)
    owner_api.post(f"/api/cells/{cell.pk}/annotations/", {"kind": "not_a_cell"}, format="json")
    response = owner_api.post("/api/training-jobs/", {"jobs": [processed_field.job_id]}, format="json")
    assert response.status_code == 400
    assert response.json()["detail"] == (
        "The chosen jobs have no annotated cells with classes to train on (cells marked not a cell or badly "
        "outlined do not count); annotate some cells first, or train from labelled jobs."
    )
    weak = owner_api.post("/api/training-jobs/", {"jobs": [processed_field.job_id], "source": "jobs"}, format="json")
    assert weak.status_code == 400 and weak.json()["detail"].startswith("None of the chosen jobs has a finished field")
    assert TrainingJob.objects.count() == 0


def test_ids_beyond_what_the_database_stores_are_a_400_not_a_server_error(owner_api):
    response = owner_api.post("/api/training-jobs/", {"jobs": [2**70], "base_model": 2**70}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert set(body) >= {"jobs", "base_model"}
    assert TrainingJob.objects.count() == 0


def test_another_users_job_cannot_be_trained_on_until_an_administrator_shares_it(
    processed_field, owner, outsider, outsider_api, admin_user
):
    _annotate(owner, processed_field, {1: [0]})
    refused = outsider_api.post("/api/training-jobs/", {"jobs": [processed_field.job_id]}, format="json")
    assert refused.status_code == 400
    assert refused.json()["detail"].startswith(f"There is no job with id {processed_field.job_id} you may train on")
    with pytest.raises(Exception, match="Only an administrator shares"):
        curation.job_share(job=processed_field.job, user=outsider, shared_by=owner)
    curation.job_share(job=processed_field.job, user=outsider, shared_by=admin_user)
    assert JobShare.objects.count() == 1
    assert (
        outsider_api.post("/api/training-jobs/", {"jobs": [processed_field.job_id]}, format="json").status_code == 201
    )


def test_unknown_backbones_and_bioimageio_starts_are_refused(processed_field, owner, owner_api):
    _annotate(owner, processed_field, {1: [0]})
    response = owner_api.post(
        "/api/training-jobs/", {"jobs": [processed_field.job_id], "backbone": "no-such-net"}, format="json"
    )
    assert response.status_code == 400 and response.json()["detail"].startswith(
        "There is no backbone called 'no-such-net'"
    )
    RegisteredModel.objects.filter(pk=registry.classifier_default().pk).update(format="bioimage.io")
    fine = owner_api.post(
        "/api/training-jobs/",
        {"jobs": [processed_field.job_id], "base_model": registry.classifier_default().pk},
        format="json",
    )
    assert fine.status_code == 400 and "only hpaweb checkpoints can be fine-tuned" in fine.json()["detail"]


def test_training_from_annotated_cells_registers_a_private_model_usable_for_new_runs(
    processed_field, owner, owner_api, outsider_api
):
    _annotate(owner, processed_field, {1: [0], 2: [0, 16], 3: [14], 4: [14]})
    base = registry.classifier_default()
    created = owner_api.post(
        "/api/training-jobs/",
        {"jobs": [processed_field.job_id], "name": "My cells", "epochs": 2, "base_model": base.pk},
        format="json",
    )
    assert created.status_code == 201, created.json()
    body = created.json()
    assert (body["status"], body["data_summary"]) == (
        "queued",
        {"annotated_cells": 4, "labelled_fields": 0, "fields": 1},
    )
    training.training_run(training_job_id=body["id"])
    done = owner_api.get(f"/api/training-jobs/{body['id']}/").json()
    assert done["status"] == "done", done["error"]
    assert [(entry["stage"], entry["epoch"]) for entry in done["history"]] == [("round 0", 1), ("round 0", 2)]
    assert done["progress"]["stage"] == "done" and isinstance(done["progress"]["loss"], float)
    model = RegisteredModel.objects.get(pk=done["result_model"]["id"])
    assert (model.name, model.visibility, model.owner) == ("My cells", "private", owner)
    assert "4 cells annotated by hand" in model.card and model.summary.startswith("Trained in hpaweb by owner")
    assert model.training_data["hpaweb_training_job"] == body["id"]
    assert outsider_api.get(f"/api/models/{model.pk}/").status_code == 404
    assert outsider_api.get(f"/api/training-jobs/{body['id']}/").status_code == 404
    # Chosen for a re-run of the job: its cells get this model's predictions.
    intake.fields_classify(fields=[processed_field], classifier=model, user=owner)
    processing.field_classify(field_id=processed_field.pk, classifier_id=model.pk)
    processed_field.refresh_from_db()
    assert processed_field.classifier == model
    assert {cell.classifier_id for cell in processed_field.cells.all()} == {model.pk}


def test_weak_training_from_a_labelled_field_fine_tunes_the_chosen_model(processed_field, owner, owner_api):
    processed_field.image_labels = [0, 16]
    processed_field.save()
    base = registry.classifier_default()
    created = owner_api.post(
        "/api/training-jobs/",
        {"jobs": [processed_field.job_id], "source": "jobs", "base_model": base.pk, "epochs": 1, "refine_rounds": 1},
        format="json",
    ).json()
    assert created["data_summary"] == {"annotated_cells": 0, "labelled_fields": 1, "fields": 1}
    training.training_run(training_job_id=created["id"])
    done = TrainingJob.objects.get(pk=created["id"])
    assert done.status == "done", done.error
    assert [entry["stage"] for entry in done.history] == ["round 0", "round 1"]
    assert done.result_model.input_size_px == base.input_size_px
    assert f"fine-tuned from {base.label}" in done.result_model.card


def test_cancelling_a_queued_job_stops_it_before_it_runs_and_a_finished_one_cannot_be_cancelled(
    processed_field, owner, owner_api
):
    _annotate(owner, processed_field, {1: [0]})
    created = owner_api.post("/api/training-jobs/", {"jobs": [processed_field.job_id]}, format="json").json()
    cancelled = owner_api.post(f"/api/training-jobs/{created['id']}/cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    training.training_run(training_job_id=created["id"])  # a message delivered after the cancel does nothing
    assert TrainingJob.objects.get(pk=created["id"]).status == "cancelled"
    again = owner_api.post(f"/api/training-jobs/{created['id']}/cancel/")
    assert again.status_code == 409 and again.json()["detail"] == "This training job is cancelled already."


def test_a_cancel_request_stops_a_running_training_between_batches(processed_field, owner, monkeypatch):
    _annotate(owner, processed_field, {1: [0], 2: [3], 3: [14]})
    job = training_jobs.training_job_create(
        owner=owner, job_ids=[processed_field.job_id], epochs=3, base_model_id=registry.classifier_default().pk
    )
    monkeypatch.setattr(training, "CANCEL_POLL_S", 0.0)
    from ml.training import classifier as ml_classifier

    original = ml_classifier.train

    def train_and_cancel(config, *, progress=None, should_stop=None, **kwargs):
        def progress_then_cancel(report):
            progress(report)
            TrainingJob.objects.filter(pk=job.pk).update(cancel_requested=True)

        return original(config, progress=progress_then_cancel, should_stop=should_stop, **kwargs)

    monkeypatch.setattr(ml_classifier, "train", train_and_cancel)
    training.training_run(training_job_id=job.pk)
    job.refresh_from_db()
    assert job.status == "cancelled" and len(job.history) == 1 and job.result_model is None


def test_a_training_that_cannot_run_fails_with_a_sentence(processed_field, owner, client):
    _annotate(owner, processed_field, {1: [0]})
    job = training_jobs.training_job_create(owner=owner, job_ids=[processed_field.job_id])
    # The annotation goes before the worker takes the job.
    curation.annotation_undo(user=owner, annotation=processed_field.annotations.get())
    training.training_run(training_job_id=job.pk)
    job.refresh_from_db()
    assert job.status == "failed"
    assert job.error.startswith("Training could not start: The chosen jobs have no annotated cells")
    client.force_login(owner)
    page = client.get(f"/training/{job.pk}/")
    assert page.status_code == 200 and b"Training could not start" in page.content


@pytest.mark.slow
def test_training_from_the_compact_backbone_trains_a_new_network(processed_field, owner):
    _annotate(owner, processed_field, {1: [0], 2: [0, 16], 3: [14], 4: [14]})
    job = training_jobs.training_job_create(owner=owner, job_ids=[processed_field.job_id], epochs=1, backbone="compact")
    training.training_run(training_job_id=job.pk)
    job.refresh_from_db()
    assert job.status == "done", job.error
    assert job.result_model.input_size_px == training.DEFAULT_SIZE_PX
    assert "trained from the compact backbone" in job.result_model.card


def test_the_train_page_refuses_a_request_without_usable_cells_with_the_sentence(processed_field, owner, client):
    client.force_login(owner)
    page = client.get("/training/")
    assert page.status_code == 200 and str(processed_field.job).encode() in page.content
    refused = client.post("/training/", {"jobs": [processed_field.job_id], "source": "cells", "backbone": "compact",
                                         "epochs": 2, "refine_rounds": 1})  # fmt: skip
    assert refused.status_code == 400
    assert b"The chosen jobs have no annotated cells with classes to train on" in refused.content
    assert TrainingJob.objects.count() == 0
    _annotate(owner, processed_field, {1: [0]})
    started = client.post("/training/", {"jobs": [processed_field.job_id], "source": "cells", "backbone": "compact",
                                         "epochs": 2, "refine_rounds": 1})  # fmt: skip
    training_job = TrainingJob.objects.get()
    assert started.status_code == 302 and started["Location"] == f"/training/{training_job.pk}/"
    detail = client.get(f"/training/{training_job.pk}/")
    assert b"Waiting for a training worker" in detail.content and b"Cancel training" in detail.content


def test_training_from_annotated_cells_validates_on_held_out_annotated_cells(
    processed_field, owner, owner_api, monkeypatch
):
    # Few enough cells to train in a second: hold half of each class's cells out (one of the two class-14 cells).
    monkeypatch.setattr(training, "MIN_CELLS_TO_VALIDATE", 4)
    monkeypatch.setattr(training, "CELL_VALIDATION_FRACTION", 0.5)
    _annotate(owner, processed_field, {1: [0], 2: [0, 16], 3: [14], 4: [14]})
    created = owner_api.post(
        "/api/training-jobs/",
        {"jobs": [processed_field.job_id], "epochs": 2, "base_model": registry.classifier_default().pk},
        format="json",
    ).json()
    training.training_run(training_job_id=created["id"])
    done = TrainingJob.objects.get(pk=created["id"])
    assert done.status == "done", done.error
    # Scored at cell level every epoch (the held-out cell shows class 14 only, so its AP is 1.0), not at image level.
    assert [entry["validation"] for entry in done.history] == [{"val_cell_map": 1.0}, {"val_cell_map": 1.0}]
    card = done.result_model.card
    assert "cell-level macro AP: 1.000 on held-out annotated cells." in card
    assert "| Mitochondria | 1.000 |" in card and "| Nucleoplasm |  |" in card
    # The starting model scored as well on the held-out cell (1.0): no epoch beat it, so its weights are kept,
    # and the card, the API and the page say so.
    assert done.progress["outcome"] == {
        "score_name": "cell-level macro AP",
        "held_out": "annotated cells",
        "score": 1.0,
        "start_score": 1.0,
        "kept_starting_model": True,
    }
    assert "No epoch did better than the starting model (1.000 on the same held-out annotated cells)" in card
    assert [entry["score_name"] for entry in done.history] == ["cell-level macro AP"] * 2


def test_the_training_page_shows_each_epochs_score_and_the_starting_models(processed_field, owner, client, monkeypatch):
    monkeypatch.setattr(training, "MIN_CELLS_TO_VALIDATE", 4)
    monkeypatch.setattr(training, "CELL_VALIDATION_FRACTION", 0.5)
    _annotate(owner, processed_field, {1: [0], 2: [0, 16], 3: [14], 4: [14]})
    job = training_jobs.training_job_create(
        owner=owner, job_ids=[processed_field.job_id], epochs=2, base_model_id=registry.classifier_default().pk
    )
    training.training_run(training_job_id=job.pk)
    client.force_login(owner)
    page = client.get(f"/training/{job.pk}/").content.decode()
    assert page.count("cell-level macro AP 1.000") == 4  # the last epoch's line, the outcome, the two epochs
    assert "the starting model 1.000" in page and 'data-testid="kept-starting-model"' in page
    assert "nothing held out" not in page


def test_epochs_recorded_before_scores_were_named_still_show_their_score(owner, client):
    old = {"stage": "round 0", "epoch": 1, "epochs": 2, "loss": 0.5, "epoch_overall": 1, "epochs_overall": 2}
    job = TrainingJob.objects.create(
        owner=owner,
        name="old",
        status=TrainingJob.Status.RUNNING,
        progress={**old, "validation": {"val_image_map": 0.75}},
        history=[{**old, "validation": {"val_image_map": 0.75}}, {**old, "epoch": 2, "validation": {}}],
    )
    client.force_login(owner)
    page = client.get(f"/training/{job.pk}/").content.decode()
    assert "image AP 0.750" in page and page.count("nothing held out") == 1
