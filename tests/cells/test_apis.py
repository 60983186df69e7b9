import csv
import io
import json
import re
import zipfile

import numpy as np
import pytest
import tifffile
from django.contrib.staticfiles import finders
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from drf_spectacular.drainage import GENERATOR_STATS
from knox.models import AuthToken
from pycocotools.coco import COCO
from rest_framework.test import APIClient

from cells import intake, processing
from cells.models import Cell, Job
from cells.uploads import FieldUpload
from tests.factories import field_arrays, field_pngs, png_bytes
from tests.ml.bioimageio import support

bioimageio_packages = support.bioimageio_packages  # the session's packages (a fixture)

pytestmark = pytest.mark.django_db


def test_create_job_from_four_files_returns_201_and_the_queued_field(owner_api, channel_uploads):
    response = owner_api.post("/api/jobs/", {"name": "api job", **channel_uploads()}, format="multipart")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["name"], body["status"], body["progress"]) == ("api job", "queued", 0.0)
    assert [(f["name"], f["width"], f["height"], f["status"]) for f in body["fields"]] == [("f1", 512, 512, "queued")]


def test_create_job_with_mismatched_sizes_returns_400_with_a_sentence(owner_api, channel_uploads):
    files = channel_uploads()
    files["yellow"] = SimpleUploadedFile("f1_yellow.png", png_bytes(field_arrays(size_px=256)["yellow"]))
    response = owner_api.post("/api/jobs/", files, format="multipart")
    assert response.status_code == 400
    assert "size" in response.json()["detail"].lower()
    assert Job.objects.count() == 0


def test_create_job_without_files_returns_400(owner_api):
    response = owner_api.post("/api/jobs/", {"name": "empty"}, format="multipart")
    assert response.status_code == 400
    assert "green and blue" in response.json()["detail"]


def test_api_requires_authentication(channel_uploads):
    assert APIClient().get("/api/jobs/").status_code in (401, 403)


def test_token_authentication_reads_own_jobs(owner, channel_uploads):
    intake.job_create(owner=owner, uploads=[FieldUpload(name="f1", channel_files=channel_uploads())])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {AuthToken.objects.create(user=owner)[1]}")
    response = client.get("/api/jobs/")
    assert response.status_code == 200
    assert response.json()["count"] == 1


def test_outsider_cannot_read_or_download_another_users_job(owner, outsider_api, channel_uploads):
    job = intake.job_create(owner=owner, uploads=[FieldUpload(name="f1", channel_files=channel_uploads())])
    assert outsider_api.get("/api/jobs/").json()["count"] == 0
    for url in (f"/api/jobs/{job.pk}/", f"/api/jobs/{job.pk}/cells/", f"/api/jobs/{job.pk}/submission.csv"):
        assert outsider_api.get(url).status_code == 404


def test_cells_and_submission_csv_of_a_processed_job(owner, owner_api, channel_uploads, ml_settings):
    job = intake.job_create(owner=owner, uploads=[FieldUpload(name="f1", channel_files=channel_uploads())])
    processing.field_process(field_id=job.fields.get().pk)

    detail = owner_api.get(f"/api/jobs/{job.pk}/").json()
    assert (detail["status"], detail["progress"]) == ("done", 1.0)
    cells = owner_api.get(f"/api/jobs/{job.pk}/cells/").json()
    assert cells["count"] == 4
    assert {cell["label"] for cell in cells["results"]} == {1, 2, 3, 4}

    response = owner_api.get(f"/api/jobs/{job.pk}/submission.csv")
    assert response.status_code == 200 and response["Content-Type"] == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.getvalue().decode())))
    assert [(r["ID"], r["ImageWidth"], r["ImageHeight"]) for r in rows] == [("f1", "512", "512")]


@pytest.fixture
def processed_job(owner, channel_uploads, ml_settings):
    """A processed job of one 256 px field with 4 cells; cell i is most confident in class i (0.9)."""
    ml_settings.ML_MODEL_PATH = ""
    job = intake.job_create(owner=owner, uploads=[FieldUpload(name="f1", channel_files=channel_uploads(size_px=256))])
    processing.field_process(field_id=job.fields.get().pk)
    for cell in Cell.objects.filter(field__job=job):
        probabilities = [0.01] * 19
        probabilities[cell.label] = 0.9
        Cell.objects.filter(pk=cell.pk).update(probabilities=probabilities, top_class=cell.label, top_confidence=0.9)
    return job


def _zip_of_fields(*field_ids: str) -> SimpleUploadedFile:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for field_id in field_ids:
            for channel, data in field_pngs(size_px=64).items():
                archive.writestr(f"images/{field_id}_{channel}.png", data)
    return SimpleUploadedFile("fields.zip", buffer.getvalue(), content_type="application/zip")


def test_create_job_from_a_zip_batch_gives_one_job_with_every_field(owner_api):
    response = owner_api.post("/api/jobs/", {"name": "batch", "files": [_zip_of_fields("b", "a")]}, format="multipart")
    assert response.status_code == 201, response.content
    assert [(f["name"], f["status"], f["cell_count"]) for f in response.json()["fields"]] == [
        ("a", "queued", 0),
        ("b", "queued", 0),
    ]


def test_create_job_with_assignments_for_files_named_freely(owner_api):
    pngs = field_pngs(size_px=64)
    files = [SimpleUploadedFile("one.png", pngs["green"]), SimpleUploadedFile("two.png", pngs["blue"])]
    assignments = json.dumps(
        {"one.png": {"field": "A1", "channel": "green"}, "two.png": {"field": "A1", "channel": "blue"}}
    )
    response = owner_api.post("/api/jobs/", {"files": files, "assignments": assignments}, format="multipart")
    assert response.status_code == 201, response.content
    assert [f["name"] for f in response.json()["fields"]] == ["A1"]


def test_create_job_with_a_bad_field_in_a_batch_lists_it_and_stores_nothing(owner_api):
    pngs = field_pngs(size_px=64)
    files = [
        SimpleUploadedFile("a_green.png", pngs["green"]),
        SimpleUploadedFile("a_blue.png", pngs["blue"]),
        SimpleUploadedFile("b_green.png", pngs["green"]),
    ]
    response = owner_api.post("/api/jobs/", {"files": files}, format="multipart")
    assert response.status_code == 400
    assert list(response.json()["fields"]) == ["b"] and "blue channel is missing" in response.json()["fields"]["b"]
    assert Job.objects.count() == 0


def test_job_list_is_paginated(owner, owner_api, channel_uploads):
    for index in range(3):
        intake.job_create(
            owner=owner,
            uploads=[FieldUpload(name="f1", channel_files=channel_uploads(size_px=64))],
            name=f"job {index}",
        )
    body = owner_api.get("/api/jobs/?page_size=2").json()
    assert (body["count"], len(body["results"]), body["results"][0]["name"]) == (3, 2, "job 2")
    assert body["next"].endswith("page=2&page_size=2")


def test_fields_cells_and_predictions_of_a_job(owner_api, processed_job):
    field = processed_job.fields.get()
    fields = owner_api.get(f"/api/jobs/{processed_job.pk}/fields/").json()
    assert [(f["id"], f["status"], f["cell_count"]) for f in fields["results"]] == [(field.pk, "done", 4)]
    assert owner_api.get(f"/api/fields/{field.pk}/").json()["cell_count"] == 4
    cells = owner_api.get(f"/api/fields/{field.pk}/cells/?class_index=3&min_confidence=0.5").json()["results"]
    assert [cell["label"] for cell in cells] == [3]
    cell = owner_api.get(f"/api/cells/{cells[0]['id']}/").json()
    assert cell["predictions"] == [{"class_index": 3, "class_name": "Nucleoli fibrillar center", "confidence": 0.9}]
    ranked = owner_api.get(f"/api/jobs/{processed_job.pk}/cells/?class_index=18&order=confidence").json()["results"]
    assert [c["label"] for c in ranked] == [1, 2, 3, 4]
    # The REST convention: a leading "-" sorts descending, so the most confident cell comes first.
    highest = owner_api.get(f"/api/jobs/{processed_job.pk}/cells/?class_index=2&order=-confidence").json()["results"]
    assert [c["label"] for c in highest] == [2, 1, 3, 4]
    lowest = owner_api.get(f"/api/jobs/{processed_job.pk}/cells/?class_index=2&order=confidence").json()["results"]
    assert [c["label"] for c in lowest] == [1, 3, 4, 2]
    counts = owner_api.get(f"/api/jobs/{processed_job.pk}/class-counts/?min_confidence=0.5").json()
    assert [c["cells"] for c in counts] == [0, 1, 1, 1, 1] + [0] * 14


def test_every_export_downloads_through_the_api(owner_api, processed_job, tmp_path):
    base = f"/api/jobs/{processed_job.pk}"
    coco_response = owner_api.get(f"{base}/coco.json?min_confidence=0.5")
    assert coco_response["Content-Type"] == "application/json"
    (tmp_path / "coco.json").write_bytes(coco_response.getvalue())
    coco = COCO(str(tmp_path / "coco.json"))
    assert len(coco.getAnnIds()) == 4 and len(coco.getCatIds()) == 19
    cells_csv = owner_api.get(f"{base}/cells.csv", HTTP_ACCEPT="text/csv")
    assert cells_csv.status_code == 200 and cells_csv.getvalue().decode().count("\n") == 5
    labels = owner_api.get(f"{base}/labels.zip")
    assert labels["Content-Disposition"] == f'attachment; filename="job-{processed_job.pk}-labels.zip"'
    with zipfile.ZipFile(io.BytesIO(labels.getvalue())) as archive:
        assert sorted(archive.namelist()) == ["f1_cells.png", "f1_nuclei.png", "manifest.json"]
    field_labels = owner_api.get(f"/api/fields/{processed_job.fields.get().pk}/labels/nuclei.png")
    assert field_labels["Content-Type"] == "image/png" and field_labels.getvalue()[:4] == b"\x89PNG"
    assert field_labels["Content-Disposition"] == 'attachment; filename="f1_nuclei.png"'
    assert owner_api.get(f"/api/fields/{processed_job.fields.get().pk}/labels/preview.png").status_code == 404


def test_label_images_of_a_field_not_processed_yet_are_missing(owner, owner_api, client, channel_uploads):
    job = intake.job_create(owner=owner, uploads=[FieldUpload(name="f1", channel_files=channel_uploads(size_px=64))])
    field = job.fields.get()
    client.force_login(owner)
    for kind in ("cells", "nuclei"):
        assert owner_api.get(f"/api/fields/{field.pk}/labels/{kind}.png").status_code == 404
        assert client.get(f"/fields/{field.pk}/labels/{kind}.png").status_code == 404


def test_retry_runs_a_failed_field_again_and_refuses_one_that_has_not_failed(owner_api, processed_job):
    field = processed_job.fields.get()
    assert owner_api.post(f"/api/fields/{field.pk}/retry/").status_code == 409
    processing.field_fail(field_id=field.pk, reason="broken")
    response = owner_api.post(f"/api/fields/{field.pk}/retry/")
    assert response.status_code == 202 and response.json()["status"] == "queued"


def test_delete_removes_the_job(owner_api, processed_job):
    assert owner_api.delete(f"/api/jobs/{processed_job.pk}/").status_code == 204
    assert owner_api.get(f"/api/jobs/{processed_job.pk}/").status_code == 404


def test_models_list_says_whether_a_default_classifier_is_installed(owner_api, settings, tiny_classifier_file):
    settings.ML_MODEL_PATH = ""
    models = owner_api.get("/api/models/").json()["results"]
    assert [(m["kind"], m["name"], m["available"], m["is_default"]) for m in models] == [
        ("classifier", "", False, False),
        ("classifier", "hpaweb-synth-v1", True, False),
        ("segmentation", "classical", True, False),
        ("segmentation", "unet", False, False),
    ]
    settings.ML_MODEL_PATH = str(tiny_classifier_file)
    models = owner_api.get("/api/models/").json()["results"]
    default = next(m for m in models if m["is_default"])
    assert (default["name"], default["version"], default["format"]) == ("tiny-classifier", "1", "hpaweb")


@pytest.fixture
def admin_api(django_user_model):
    client = APIClient()
    client.force_authenticate(django_user_model.objects.create_user(username="admin", password="pw", is_staff=True))
    return client


def test_an_administrator_imports_a_model_and_a_user_picks_it_for_a_job(
    admin_api, owner_api, tiny_classifier_file, channel_uploads, sent_to_worker
):
    upload = SimpleUploadedFile("lab-model.pt", tiny_classifier_file.read_bytes())
    created = admin_api.post("/api/models/", {"file": upload, "visibility": "shared"}, format="multipart")
    assert created.status_code == 201, created.json()
    model = created.json()
    assert (model["name"], model["kind"], model["format"], model["input_size_px"]) == (
        "tiny-classifier",
        "classifier",
        "hpaweb",
        32,
    )
    detail = owner_api.get(f"/api/models/{model['id']}/").json()
    assert detail["class_names"][0] == "Nucleoplasm" and detail["metrics"] == {"val_map": 0.25}
    job = owner_api.post("/api/jobs/", {"classifier": model["id"], **channel_uploads()}, format="multipart").json()
    assert job["classifier"] == {
        "id": model["id"],
        "name": "tiny-classifier",
        "version": "1",
        "kind": "classifier",
        "format": "hpaweb",
        "summary": model["summary"],
    }


def test_a_user_cannot_add_a_shared_model_nor_use_a_classifier_that_is_not_theirs(
    owner_api, tiny_classifier_file, channel_uploads
):
    upload = SimpleUploadedFile("m.pt", tiny_classifier_file.read_bytes())
    refused = owner_api.post("/api/models/", {"file": upload, "visibility": "shared"}, format="multipart")
    assert refused.status_code == 403
    assert refused.json()["detail"] == "Only an administrator adds shared models; import it as private instead."
    response = owner_api.post("/api/jobs/", {"classifier": 9999, **channel_uploads()}, format="multipart")
    assert response.status_code == 400
    assert "no classifier with id 9999" in response.json()["detail"]


def test_an_administrator_imports_a_segmentation_pair_and_a_user_segments_a_job_with_it(
    admin_api, owner_api, bioimageio_packages, channel_uploads, sent_to_worker
):
    pair = {
        "kind": "segmenter",
        "file": SimpleUploadedFile("nuclei.zip", bioimageio_packages.nuclei_zip.read_bytes()),
        "cell_file": SimpleUploadedFile("cell.zip", bioimageio_packages.cell_zip.read_bytes()),
        "name": "HPA pair",
        "visibility": "shared",
    }
    created = admin_api.post("/api/models/", pair, format="multipart")
    assert created.status_code == 201, created.json()
    model = created.json()
    assert (model["kind"], model["name"], model["format"]) == ("segmenter", "HPA pair", "bioimage.io")
    listed = [m for m in owner_api.get("/api/models/").json()["results"] if m["kind"] == "segmentation"]
    assert [(m["id"], m["name"], m["available"], m["visibility"]) for m in listed] == [
        (None, "classical", True, "shared"),
        (None, "unet", False, "shared"),
        (model["id"], "HPA pair", True, "shared"),
    ]
    backend = f"model:{model['id']}"
    job = owner_api.post("/api/jobs/", {"segmentation_backend": backend, **channel_uploads()}, format="multipart")
    assert job.status_code == 201, job.json()
    assert job.json()["segmentation_backend"] == backend
    refused = owner_api.post("/api/jobs/", {"segmentation_backend": "unet", **channel_uploads()}, format="multipart")
    assert refused.status_code == 400 and "segmentation_backend" in refused.content.decode()


def test_a_segmenter_import_needs_its_cell_package_and_refuses_a_classifier_as_one(admin_api, bioimageio_packages):
    nuclei = bioimageio_packages.nuclei_zip.read_bytes()
    missing = admin_api.post(
        "/api/models/", {"kind": "segmenter", "file": SimpleUploadedFile("n.zip", nuclei)}, format="multipart"
    )
    assert missing.status_code == 400 and "cell_file" in missing.content.decode()
    classifier = SimpleUploadedFile("c.zip", bioimageio_packages.torchscript_zip.read_bytes())
    refused = admin_api.post(
        "/api/models/",
        {"kind": "segmenter", "file": SimpleUploadedFile("n.zip", nuclei), "cell_file": classifier},
        format="multipart",
    )
    assert refused.status_code == 400
    assert refused.json()["detail"] == (
        "The cell package tiny linear classifier is a classifier (it outputs class scores, not maps); "
        "give a cell segmentation package."
    )


def test_a_broken_model_file_gets_a_sentence_and_nothing_is_registered(admin_api):
    before = admin_api.get("/api/models/").json()["count"]
    upload = SimpleUploadedFile("broken.pt", b"not a checkpoint")
    response = admin_api.post("/api/models/", {"file": upload, "visibility": "shared"}, format="multipart")
    assert response.status_code == 400
    assert "is not an hpaweb classifier checkpoint or is damaged" in response.json()["detail"]
    assert admin_api.get("/api/models/").json()["count"] == before


def test_job_field_and_cell_carry_the_model_that_made_their_predictions(
    owner_api, owner, channel_uploads, ml_settings, tiny_classifier_file
):
    ml_settings.ML_MODEL_PATH = str(tiny_classifier_file)
    job = intake.job_create(owner=owner, uploads=[FieldUpload(name="f1", channel_files=channel_uploads(size_px=256))])
    field = job.fields.get()
    processing.field_process(field_id=field.pk)
    summary = {"name": "tiny-classifier", "version": "1", "kind": "classifier"}
    job_json = owner_api.get(f"/api/jobs/{job.pk}/").json()
    assert {k: job_json["classifier"][k] for k in summary} == summary
    field_json = job_json["fields"][0]
    assert {k: field_json["model"][k] for k in summary} == summary
    assert field_json["missing_reference_channels"] == [] and field_json["unfamiliar_share"] is None
    cell_json = owner_api.get(f"/api/fields/{field.pk}/cells/").json()["results"][0]
    assert {k: cell_json["model"][k] for k in summary} == summary
    assert (cell_json["familiarity"], cell_json["unfamiliar"]) == (None, None)


def test_a_field_without_red_and_yellow_says_so(owner_api, owner, channel_uploads, ml_settings):
    ml_settings.ML_MODEL_PATH = ""
    uploads = [FieldUpload(name="f1", channel_files=channel_uploads(channels=("green", "blue"), size_px=256))]
    job = intake.job_create(owner=owner, uploads=uploads)
    field_json = owner_api.get(f"/api/jobs/{job.pk}/").json()["fields"][0]
    assert field_json["missing_reference_channels"] == ["red", "yellow"]


def test_a_finished_job_runs_again_with_another_model_and_the_two_can_be_compared(
    owner_api, owner, channel_uploads, ml_settings, tiny_classifier_file, django_capture_on_commit_callbacks
):
    from cells import registry

    ml_settings.ML_MODEL_PATH = str(tiny_classifier_file)
    job = intake.job_create(owner=owner, uploads=[FieldUpload(name="f1", channel_files=channel_uploads(size_px=256))])
    processing.field_process(field_id=job.fields.get().pk)
    shipped = next(m for m in registry.models_register_installed() if m.name == "hpaweb-synth-v1")
    ml_settings.CELERY_TASK_ALWAYS_EAGER = True
    from hpaweb.celery import app

    app.conf.task_always_eager = True
    try:
        with django_capture_on_commit_callbacks(execute=True):
            response = owner_api.post(f"/api/jobs/{job.pk}/classify/", {"classifier": shipped.pk}, format="json")
    finally:
        app.conf.task_always_eager = False
    assert response.status_code == 202
    job_json = owner_api.get(f"/api/jobs/{job.pk}/").json()
    assert job_json["classifier"]["name"] == "hpaweb-synth-v1"
    assert job_json["fields"][0]["model"]["name"] == "hpaweb-synth-v1" and job_json["status"] == "done"
    first = job_json["fields"][0]["model"]["id"]
    tiny = next(m["id"] for m in owner_api.get("/api/models/").json()["results"] if m["name"] == "tiny-classifier")
    comparison = owner_api.get(f"/api/jobs/{job.pk}/compare/", {"first": tiny, "second": first}).json()
    assert comparison["cells"] == 4 and len(comparison["per_class"]) == 19
    assert 0.0 <= comparison["top_class_agreement"] <= 1.0


def test_running_an_unfinished_job_with_another_model_is_refused(owner_api, owner, channel_uploads, ml_settings):
    from cells import registry

    job = intake.job_create(owner=owner, uploads=[FieldUpload(name="f1", channel_files=channel_uploads())])
    shipped = registry.models_register_installed()[0]
    response = owner_api.post(f"/api/jobs/{job.pk}/classify/", {"classifier": shipped.pk}, format="json")
    assert response.status_code == 409
    assert response.json()["detail"] == "Only finished fields can be run with another model; f1 is not done."


def test_outsider_gets_404_from_every_endpoint_of_another_users_job(outsider_api, processed_job):
    field = processed_job.fields.get()
    cell = field.cells.first()
    suffixes = ("", "fields/", "cells/", "class-counts/", "submission.csv", "coco.json", "cells.csv", "labels.zip")
    urls = [f"/api/jobs/{processed_job.pk}/{suffix}" for suffix in suffixes]
    urls += [f"/api/fields/{field.pk}/", f"/api/fields/{field.pk}/cells/", f"/api/cells/{cell.pk}/"]
    urls += [f"/api/fields/{field.pk}/labels/{kind}.png" for kind in ("cells", "nuclei")]
    for url in urls:
        assert outsider_api.get(url).status_code == 404, url
    assert outsider_api.get("/api/jobs/").json()["count"] == 0
    processing.field_fail(field_id=field.pk, reason="broken")
    assert outsider_api.post(f"/api/fields/{field.pk}/retry/").status_code == 404
    assert processed_job.fields.get().status == "failed"
    assert outsider_api.delete(f"/api/jobs/{processed_job.pk}/").status_code == 404
    assert Job.objects.count() == 1


def test_openapi_schema_documents_every_endpoint_and_the_docs_page_is_served_locally(client):
    schema = client.get("/api/schema/?format=json").json()
    assert schema["openapi"].startswith("3.")
    assert {"/api/jobs/", "/api/jobs/{job_id}/coco.json", "/api/cells/{cell_id}/", "/api/models/"} <= set(
        schema["paths"]
    )
    assert "knoxApiToken" in schema["components"]["securitySchemes"]
    docs = client.get("/api/docs/").content.decode()
    assert "swagger-ui" in docs and "cdn." not in docs and "https://" not in docs
    bundle = re.search(r'src="/static/([^"]+swagger-ui-bundle\.js)"', docs)[1]
    assert finders.find(bundle) is not None  # shipped by drf-spectacular-sidecar, served with the static files


def test_openapi_schema_builds_without_warnings_and_validates(tmp_path):
    GENERATOR_STATS.reset()  # count only what this build reports
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yml"))
    assert (tmp_path / "schema.yml").read_text().startswith("openapi: 3.")


def test_every_list_endpoint_is_paginated(client, owner_api, processed_job):
    schema = client.get("/api/schema/?format=json").json()
    lists = []
    for path, operations in schema["paths"].items():
        ok = operations.get("get", {}).get("responses", {}).get("200", {})
        body = ok.get("content", {}).get("application/json", {}).get("schema", {})
        if body.get("type") == "array":
            lists.append(path)
        elif body.get("$ref", "").startswith("#/components/schemas/Paginated"):
            page = schema["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
            assert {"count", "next", "previous", "results"} <= set(page["properties"]), path
    # The one bare list: always the 19 classes, never longer.
    assert lists == ["/api/jobs/{job_id}/class-counts/"]

    field = processed_job.fields.get()
    for url in (f"/api/jobs/{processed_job.pk}/cells/", f"/api/fields/{field.pk}/cells/", "/api/models/"):
        body = owner_api.get(f"{url}?page_size=2").json()
        assert (len(body["results"]), body["next"] is not None, body["previous"]) == (2, True, None), url
        assert len(owner_api.get(f"{url}?page_size=2&page=2").json()["results"]) >= 1, url
    fields = owner_api.get(f"/api/jobs/{processed_job.pk}/fields/?page_size=1").json()
    assert (fields["count"], len(fields["results"]), fields["next"]) == (1, 1, None)


def test_the_readme_example_gets_a_token_submits_a_field_and_fetches_the_csv(owner, channel_uploads, ml_settings):
    ml_settings.ML_MODEL_PATH = ""
    client = APIClient()
    token = client.post("/api/token/", {"username": "owner", "password": "owner-password"}).json()["token"]
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    files = list(channel_uploads(field_id="plate1-A3", size_px=256).values())
    job = client.post("/api/jobs/", {"name": "plate 1", "files": files}, format="multipart").json()
    assert (job["name"], job["status"], [field["name"] for field in job["fields"]]) == (
        "plate 1",
        "queued",
        ["plate1-A3"],
    )

    processing.field_process(field_id=job["fields"][0]["id"])  # what the worker does
    job = client.get(f"/api/jobs/{job['id']}/").json()
    assert (job["status"], [(field["name"], field["cell_count"]) for field in job["fields"]]) == (
        "done",
        [("plate1-A3", 4)],
    )
    submission = client.get(f"/api/jobs/{job['id']}/submission.csv")
    assert submission.status_code == 200
    assert submission.getvalue().decode() == "ID,ImageWidth,ImageHeight,PredictionString\nplate1-A3,256,256,\n"
    assert client.post("/api/token/", {"username": "owner", "password": "wrong"}).status_code == 400


def _tiff(planes: np.ndarray, name: str) -> SimpleUploadedFile:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, planes, photometric="minisblack")
    return SimpleUploadedFile(name, buffer.getvalue(), content_type="image/tiff")


def test_a_16_bit_multichannel_tiff_becomes_one_field_that_is_processed(owner_api, ml_settings):
    ml_settings.ML_MODEL_PATH = ""
    arrays = field_arrays(size_px=256, bit_depth=16)
    planes = np.stack([arrays[channel] for channel in ("red", "green", "blue", "yellow")])
    response = owner_api.post("/api/jobs/", {"multichannel": _tiff(planes, "plate7-A3.tif")}, format="multipart")
    assert response.status_code == 201, response.content
    (field,) = response.json()["fields"]
    assert (field["name"], field["width"], field["height"], field["bit_depth"]) == ("plate7-A3", 256, 256, 16)

    processing.field_process(field_id=field["id"])
    field = owner_api.get(f"/api/fields/{field['id']}/").json()
    assert (field["status"], field["cell_count"]) == ("done", 4)


def test_a_multichannel_tiff_without_four_planes_is_refused_by_name(owner_api):
    arrays = field_arrays(size_px=64)
    planes = np.stack([arrays[channel] for channel in ("red", "green", "blue")])
    response = owner_api.post("/api/jobs/", {"files": [_tiff(planes, "three.tif")]}, format="multipart")
    assert response.status_code == 400
    assert list(response.json()["fields"]) == ["three"]
    assert response.json()["fields"]["three"] == (
        "The file three.tif must hold 4 planes (red, green, blue, yellow) as (4, H, W) or (H, W, 4), but it has 3 pages (shape 3 x 64 x 64); "
        "save it with 4 pages, or upload each channel as its own file named {ID}_{channel}.tif."
    )
    assert Job.objects.count() == 0
