"""Image labels at upload, the job summary, and cell annotations (API, CSV, COCO, conflicts)."""

import io
import json
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from cells import curation, processing, selectors
from cells.models import CellAnnotation, Field, Job
from tests.factories import field_pngs, make_cell, make_field, make_job, probabilities_peaking_at

pytestmark = pytest.mark.django_db


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _field_entries(field_id: str) -> dict[str, bytes]:
    return {f"{field_id}_{channel}.png": data for channel, data in field_pngs(size_px=64).items()}


def _post_job(api, **data):
    return api.post("/api/jobs/", data, format="multipart")


def _zip_upload(entries) -> SimpleUploadedFile:
    return SimpleUploadedFile("batch.zip", _zip(entries), content_type="application/zip")


# ---- image labels at upload ------------------------------------------------------------------


def test_train_csv_inside_a_zip_labels_its_fields(owner_api, sent_to_worker):
    entries = {**_field_entries("f1"), **_field_entries("f2"), "train.csv": b"ID,Label\nf1,0|16\nf2,Golgi apparatus\n"}
    response = _post_job(owner_api, files=[_zip_upload(entries)])
    assert response.status_code == 201, response.json()
    labels = dict(Field.objects.values_list("name", "image_labels"))
    assert labels == {"f1": [0, 16], "f2": [7]}


def test_a_csv_beside_the_files_typed_labels_and_the_labels_field_all_label_fields(owner_api, sent_to_worker):
    files = [SimpleUploadedFile(name, data) for name, data in _field_entries("f1").items()]
    files += [SimpleUploadedFile(name, data) for name, data in _field_entries("f2").items()]
    files.append(SimpleUploadedFile("labels.csv", b"ID,Label,Extra\nf1,3\n"))
    response = _post_job(owner_api, files=files, labels="f2,Nucleoli|4")
    assert response.status_code == 201, response.json()
    assert dict(Field.objects.values_list("name", "image_labels")) == {"f1": [3], "f2": [2, 4]}


def test_a_labels_file_field_labels_the_fields(owner_api, sent_to_worker):
    files = [SimpleUploadedFile(name, data) for name, data in _field_entries("f1").items()]
    response = _post_job(owner_api, files=files, labels_file=SimpleUploadedFile("mine.csv", b"ID,Label\nf1,18\n"))
    assert response.status_code == 201
    assert Field.objects.get().image_labels == [18]


@pytest.mark.parametrize(
    ("labels", "sentence"),
    [
        ("f9,0", "The labels name 1 field(s) this upload does not hold (f9); correct the IDs"),
        ("f1,19", "The typed labels line 2: '19' is not one of the 19 classes"),
        ("f1,Mitochondrion", "'Mitochondrion' is not one of the 19 classes"),
        ("f1,", "the field has no label"),
    ],
)
def test_bad_typed_labels_are_refused_with_a_sentence_and_nothing_is_stored(
    owner_api, sent_to_worker, media_files, labels, sentence
):
    files = [SimpleUploadedFile(name, data) for name, data in _field_entries("f1").items()]
    response = _post_job(owner_api, files=files, labels=labels)
    assert response.status_code == 400
    assert sentence in response.json()["fields"]["labels"]
    assert (Job.objects.count(), media_files(), sent_to_worker) == (0, [], [])


def test_a_labels_csv_with_the_wrong_columns_is_refused(owner_api, sent_to_worker, media_files):
    files = [SimpleUploadedFile(name, data) for name, data in _field_entries("f1").items()]
    files.append(SimpleUploadedFile("labels.csv", b"Image,Classes\nf1,3\n"))
    response = _post_job(owner_api, files=files)
    assert response.status_code == 400
    assert response.json()["fields"]["labels"] == (
        "labels.csv must have the columns ID,Label (found Image, Classes); write one row per field, e.g. plate1-A3,0|16."
    )
    assert (Job.objects.count(), media_files()) == (0, [])


def test_a_train_csv_in_a_zip_naming_an_unknown_field_is_refused(owner_api, sent_to_worker, media_files):
    entries = {**_field_entries("f1"), "train.csv": b"ID,Label\nf1,0\nnot-uploaded,1\n"}
    response = _post_job(owner_api, files=[_zip_upload(entries)])
    assert response.status_code == 400
    assert "(not-uploaded)" in response.json()["fields"]["labels"]
    assert (Job.objects.count(), media_files()) == (0, [])


def test_a_zip_csv_without_id_and_label_columns_is_skipped(owner_api, sent_to_worker):
    # The synthetic writer's solution.csv sits beside train.csv; it is not a labels file.
    entries = {**_field_entries("f1"), "solution.csv": b"ID,ImageWidth,ImageHeight,PredictionString\n"}
    assert _post_job(owner_api, files=[_zip_upload(entries)]).status_code == 201
    assert Field.objects.get().image_labels is None


def test_two_sources_that_disagree_on_a_field_are_refused(owner_api, sent_to_worker):
    files = [SimpleUploadedFile(name, data) for name, data in _field_entries("f1").items()]
    files.append(SimpleUploadedFile("labels.csv", b"ID,Label\nf1,3\n"))
    response = _post_job(owner_api, files=files, labels="f1,4")
    assert response.status_code == 400
    assert response.json()["fields"]["labels"].startswith("labels.csv and the typed labels give field f1 different")


def test_the_upload_page_takes_typed_labels(client, owner, sent_to_worker):
    client.force_login(owner)
    files = [SimpleUploadedFile(name, data) for name, data in _field_entries("f1").items()]
    response = client.post(
        "/jobs/new/", {"files": files, "labels": "ID,Label\nf1,14", "segmentation_backend": "classical"}
    )
    assert response.status_code == 302
    assert Field.objects.get().image_labels == [14]


# ---- job summary, ranks, gallery filter --------------------------------------------------------


def _labelled_job(owner):
    job = make_job(owner=owner)
    probabilities = [0.01] * 19
    probabilities[0], probabilities[16], probabilities[7] = 0.9, 0.6, 0.3
    field = make_field(job=job, status=Field.Status.DONE, image_labels=[0, 7], image_probabilities=probabilities)
    shows = make_cell(field=field, label=1, probabilities=probabilities_peaking_at(7, peak=0.8))
    misses = make_cell(field=field, label=2, probabilities=probabilities_peaking_at(3, peak=0.8))
    return job, field, shows, misses


def test_label_ranks_give_each_labels_place_among_the_field_confidences(owner):
    _, field, _, _ = _labelled_job(owner)
    ranks = selectors.label_ranks(labels=field.image_labels, probabilities=field.image_probabilities)
    assert [(r["name"], r["rank"], r["confidence"]) for r in ranks] == [
        ("Nucleoplasm", 1, 0.9),
        ("Golgi apparatus", 3, 0.3),
    ]
    # Shown at 0.5: Nucleoplasm and Cytosol; labels: Nucleoplasm and Golgi -> 1 of 3.
    assert selectors.label_agreement(labels=field.image_labels, probabilities=field.image_probabilities) == 1 / 3


def test_job_summary_and_its_csv(owner, client):
    job, field, _, _ = _labelled_job(owner)
    summary = selectors.job_summary(job=job)
    assert (summary.labelled_fields, summary.mean_agreement) == (1, 1 / 3)
    assert [bin_["cells"] for bin_ in summary.histogram] == [0] * 7 + [0, 2, 0]
    assert {count.name: count.cells for count in summary.class_counts}["Golgi apparatus"] == 1
    client.force_login(owner)
    page = client.get(f"/jobs/{job.pk}/")
    assert b"Golgi apparatus \xc2\xb7 #3" in page.content
    csv_text = b"".join(client.get(f"/jobs/{job.pk}/summary.csv").streaming_content).decode()
    assert csv_text.splitlines() == [
        "field,status,cells,labels,label_ranks,top_classes,agreement",
        "f1,done,2,0|7,0:1 7:3,Nucleoplasm:0.9000|Cytosol:0.6000|Golgi apparatus:0.3000,0.3333",
    ]


def test_gallery_filters_cells_that_show_or_miss_their_fields_labels(owner, client):
    job, _, shows, misses = _labelled_job(owner)
    client.force_login(owner)
    shown = client.get(f"/jobs/{job.pk}/gallery/?field_labels=shows&min_confidence=0.5")
    missed = client.get(f"/jobs/{job.pk}/gallery/?field_labels=misses&min_confidence=0.5")
    assert [cell.pk for cell in shown.context["page"]] == [shows.pk]
    assert [cell.pk for cell in missed.context["page"]] == [misses.pk]


def test_api_job_summary(owner, owner_api):
    job, _, _, _ = _labelled_job(owner)
    data = owner_api.get(f"/api/jobs/{job.pk}/summary/").json()
    assert data["mean_agreement"] == pytest.approx(1 / 3)
    assert data["fields"][0]["labels"][1] == {"index": 7, "name": "Golgi apparatus", "rank": 3, "confidence": 0.3}


# ---- annotations -------------------------------------------------------------------------------


def test_annotating_a_cell_records_who_when_and_the_prediction_it_corrected(owner, owner_api):
    _, _, cell, _ = _labelled_job(owner)
    response = owner_api.post(f"/api/cells/{cell.pk}/annotations/", {"classes": [2, 5], "version": 0}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["kind"], body["classes"], body["author"], body["version"]) == ("classes", [2, 5], "owner", 1)
    annotation = CellAnnotation.objects.get()
    assert annotation.corrected_probabilities == cell.probabilities and annotation.created_at is not None
    assert owner_api.get(f"/api/cells/{cell.pk}/").json()["annotation"]["classes"] == [2, 5]


def test_a_second_tab_with_an_old_version_gets_409_and_nothing_changes(owner, owner_api):
    _, _, cell, _ = _labelled_job(owner)
    assert (
        owner_api.post(f"/api/cells/{cell.pk}/annotations/", {"classes": [1], "version": 0}, format="json").status_code
        == 201
    )
    stale = owner_api.post(f"/api/cells/{cell.pk}/annotations/", {"classes": [4], "version": 0}, format="json")
    assert stale.status_code == 409
    assert stale.json()["detail"] == (
        "Cell 1 of field f1 was annotated elsewhere since you loaded it (version 1, you had 0); nothing was saved. "
        "Reload to see its current annotation, then try again."
    )
    assert list(CellAnnotation.objects.values_list("classes", flat=True)) == [[1]]


def test_not_a_cell_takes_no_classes_and_a_class_outside_the_19_is_refused(owner, owner_api):
    _, _, cell, _ = _labelled_job(owner)
    url = f"/api/cells/{cell.pk}/annotations/"
    wrong = owner_api.post(url, {"kind": "not_a_cell", "classes": [3]}, format="json")
    assert wrong.status_code == 400 and "takes no classes" in wrong.json()["detail"]
    outside = owner_api.post(url, {"classes": [19]}, format="json")
    assert outside.status_code == 400
    assert owner_api.post(url, {"kind": "badly_outlined"}, format="json").status_code == 201
    assert CellAnnotation.objects.get().kind == "badly_outlined"


def test_undo_brings_back_the_previous_annotation(owner, owner_api):
    _, _, cell, _ = _labelled_job(owner)
    url = f"/api/cells/{cell.pk}/annotations/"
    owner_api.post(url, {"classes": [1]}, format="json")
    second = owner_api.post(url, {"classes": [2]}, format="json").json()
    undone = owner_api.post(f"/api/annotations/{second['id']}/undo/", {"version": 2}, format="json")
    assert undone.status_code == 200 and undone.json()["undone_at"]
    assert curation.current_annotation(cell=cell).classes == [1]
    again = owner_api.post(f"/api/annotations/{second['id']}/undo/", {}, format="json")
    assert again.status_code == 409 and again.json()["detail"] == "This annotation was undone already."


def test_gallery_annotates_several_cells_at_once_all_or_nothing(owner, owner_api):
    job, _, first, second = _labelled_job(owner)
    url = f"/api/jobs/{job.pk}/annotations/"
    body = {"cells": [{"id": first.pk, "version": 0}, {"id": second.pk, "version": 0}], "classes": [9]}
    assert owner_api.post(url, body, format="json").status_code == 201
    assert CellAnnotation.objects.count() == 2
    stale = owner_api.post(
        url, {"cells": [{"id": first.pk, "version": 1}, {"id": second.pk, "version": 0}], "classes": [3]}, format="json"
    )
    assert stale.status_code == 409
    assert CellAnnotation.objects.count() == 2


def test_another_users_cells_and_annotations_are_missing(owner, owner_api, outsider_api):
    job, _, cell, _ = _labelled_job(owner)
    annotation = owner_api.post(f"/api/cells/{cell.pk}/annotations/", {"classes": [1]}, format="json").json()
    assert outsider_api.post(f"/api/cells/{cell.pk}/annotations/", {"classes": [1]}, format="json").status_code == 404
    assert outsider_api.post(f"/api/annotations/{annotation['id']}/undo/", {}, format="json").status_code == 404
    assert outsider_api.get(f"/api/jobs/{job.pk}/annotations/").status_code == 404


def test_annotations_are_listed_exported_as_csv_and_imported_back(owner, owner_api):
    job, _, first, second = _labelled_job(owner)
    owner_api.post(f"/api/cells/{first.pk}/annotations/", {"classes": [2, 5]}, format="json")
    listed = owner_api.get(f"/api/jobs/{job.pk}/annotations/").json()
    assert listed["count"] == 1 and listed["results"][0]["cell_label"] == 1
    exported = b"".join(owner_api.get(f"/api/jobs/{job.pk}/annotations.csv").streaming_content).decode()
    header, row = exported.splitlines()
    assert header == ",".join(curation.ANNOTATION_CSV_HEADER)
    assert row.startswith("f1,1,classes,2|5,Nucleoli|Nuclear bodies,owner,")
    imported = owner_api.post(
        f"/api/jobs/{job.pk}/annotations/import/",
        {"file": SimpleUploadedFile("a.csv", b"field,cell_id,classes\nf1,2,Actin filaments\n")},
        format="multipart",
    )
    assert imported.status_code == 201 and imported.json()["imported"] == 1
    assert curation.current_annotation(cell=second).classes == [9]


@pytest.mark.parametrize(
    ("text", "sentence"),
    [
        (b"field,cell_id,classes\nf1,99,1\n", "Line 2: this job has no cell 99 in a field named 'f1'."),
        (b"field,cell_id,classes\nf1,1,1\nf1,2,Bogus\n", "Line 3: 'Bogus' is not one of the 19 classes"),
        (b"field,cell\nf1,1\n", "The annotations CSV must have the columns field, cell_id and classes"),
    ],
)
def test_a_bad_annotations_csv_is_refused_whole(owner, owner_api, text, sentence):
    job, _, _, _ = _labelled_job(owner)
    response = owner_api.post(
        f"/api/jobs/{job.pk}/annotations/import/", {"file": SimpleUploadedFile("a.csv", text)}, format="multipart"
    )
    assert response.status_code == 400 and response.json()["detail"].startswith(sentence)
    assert CellAnnotation.objects.count() == 0


def test_coco_export_carries_the_annotated_classes(owner, owner_api):
    job, _, first, _ = _labelled_job(owner)
    owner_api.post(f"/api/cells/{first.pk}/annotations/", {"classes": [2, 5]}, format="json")
    coco = json.loads(b"".join(owner_api.get(f"/api/jobs/{job.pk}/coco.json").streaming_content))
    annotated = [entry for entry in coco["annotations"] if entry.get("annotated")]
    assert [(entry["cell_id"], entry["hpa_label"], entry["score"]) for entry in annotated] == [(1, 2, 1.0), (1, 5, 1.0)]
    assert len({entry["id"] for entry in coco["annotations"]}) == len(coco["annotations"])


def test_processing_keeps_annotations_of_unchanged_cells(stored_field, ml_settings, owner):
    field = stored_field()
    processing.field_process(field_id=field.pk)
    cell = field.cells.get(label=1)
    curation.annotations_create(user=owner, calls=[curation.CellCall(cell=cell)], kind="classes", classes=[4])
    curation.annotations_relink(field=field)
    assert curation.current_annotation(cell=field.cells.get(label=1)).classes == [4]
