"""Per-cell measurements and quality flags through the product: stored, filtered, served, exported."""

import csv
import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from django.urls import reverse

from cells import exports, intake, processing, selectors
from cells.models import Cell
from cells.uploads import FieldUpload
from ml.measure import measurement_names

pytestmark = pytest.mark.django_db


@pytest.fixture
def measured_job(owner, channel_uploads, ml_settings):
    """A processed job of two 256 px fields (4 cells each), measured with textures."""
    ml_settings.ML_MODEL_PATH = ""
    job = intake.job_create(
        owner=owner,
        uploads=[
            FieldUpload(name=name, channel_files=channel_uploads(field_id=name, size_px=256)) for name in ("f1", "f2")
        ],
        name="measured",
        pixel_size_um=0.5,
    )
    for field in job.fields.all():
        processing.field_process(field_id=field.pk)
    return job


def _text(chunks) -> str:
    return "".join(chunks)


def test_processing_stores_every_cells_measurements_and_flags(measured_job):
    cells = list(Cell.objects.filter(field__job=measured_job).order_by("field_id", "label"))
    assert len(cells) == 8
    for cell in cells:
        assert sorted(cell.measurements) == sorted(measurement_names())  # jsonb keeps its own key order
        assert cell.measurements["area_px"] == cell.area_px
        assert isinstance(cell.qc_flags, list)
    assert measured_job.pixel_size_um == 0.5


def test_the_features_csv_and_parquet_hold_every_measurement(measured_job):
    rows = list(csv.reader(io.StringIO(_text(exports.features_csv(job=measured_job)))))
    assert rows[0] == ["field", "cell_id", "qc_flags", *measurement_names()]
    assert len(rows) == 1 + 8
    cell = Cell.objects.get(field__name="f2", label=3)
    row = next(r for r in rows if r[:2] == ["f2", "3"])
    assert row[2] == "|".join(cell.qc_flags)
    assert float(row[3 + rows[0][3:].index("solidity")]) == pytest.approx(cell.measurements["solidity"], rel=1e-5)
    buffer = io.BytesIO()
    exports.write_features_parquet(job=measured_job, out=buffer)
    buffer.seek(0)
    table = pq.read_table(buffer)
    assert table.column_names == ["field", "cell_id", "qc_flags", *measurement_names()]
    assert table.num_rows == 8 and str(table.schema.field("area_px").type) == "double"
    assert sorted(table.column("area_px").to_pylist()) == sorted(
        Cell.objects.filter(field__job=measured_job).values_list("area_px", flat=True)
    )


def test_flags_filter_cells_and_leave_cells_out_of_the_submission(measured_job, owner):
    cell = Cell.objects.filter(field__job=measured_job).order_by("pk").first()
    Cell.objects.filter(field__job=measured_job).update(qc_flags=[])
    Cell.objects.filter(pk=cell.pk).update(qc_flags=["merged", "too_small"])
    assert [c.pk for c in selectors.cell_list(user=owner, job=measured_job, qc="merged")] == [cell.pk]
    assert [c.pk for c in selectors.cell_list(user=owner, job=measured_job, qc="flagged")] == [cell.pk]
    assert selectors.cell_list(user=owner, job=measured_job, qc="out_of_focus").count() == 0
    assert selectors.cell_list(user=owner, job=measured_job, qc="clean").count() == 7
    Cell.objects.filter(field__job=measured_job).update(probabilities=[0.5] * 19, top_class=0, top_confidence=0.5)
    kept = {row.image_id: row.prediction_string.count(" ") for row in exports.submission_rows(job=measured_job)}
    left = {
        row.image_id: row.prediction_string.count(" ")
        for row in exports.submission_rows(job=measured_job, exclude_qc=exports.parse_exclude_qc("all"))
    }
    flagged_field = cell.field.name
    assert left[flagged_field] < kept[flagged_field]
    assert all(left[name] == kept[name] for name in kept if name != flagged_field)
    with pytest.raises(ValueError, match="'blurry' is not a quality-control flag"):
        exports.parse_exclude_qc("blurry")


def test_the_api_serves_measurements_flags_and_the_features_exports(measured_job, owner_api):
    Cell.objects.filter(field__job=measured_job, label=1).update(qc_flags=["cut_by_border"])
    answer = owner_api.get(f"/api/jobs/{measured_job.pk}/cells/", {"qc": "cut_by_border"})
    assert answer.status_code == 200
    results = answer.json()["results"]
    assert len(results) == 2 and all(cell["qc_flags"] == ["cut_by_border"] for cell in results)
    assert results[0]["measurements"]["area_px"] == results[0]["area_px"]
    assert owner_api.get(f"/api/jobs/{measured_job.pk}/cells/", {"qc": "nonsense"}).status_code == 400
    csv_answer = owner_api.get(f"/api/jobs/{measured_job.pk}/features.csv")
    assert csv_answer.status_code == 200 and b"haralick_contrast" in b"".join(csv_answer.streaming_content)
    parquet = owner_api.get(f"/api/jobs/{measured_job.pk}/features.parquet")
    assert parquet.status_code == 200 and b"".join(parquet.streaming_content)[:4] == b"PAR1"
    refused = owner_api.get(f"/api/jobs/{measured_job.pk}/submission.csv", {"exclude_qc": "blurry"})
    assert refused.status_code == 400 and "not a quality-control flag" in json.dumps(refused.json())
    kept = owner_api.get(f"/api/jobs/{measured_job.pk}/submission.csv", {"exclude_qc": "all"})
    assert kept.status_code == 200


def test_the_viewer_json_and_the_cell_panel_carry_flags_and_measurements(measured_job, owner, client):
    field = measured_job.fields.get(name="f1")
    Cell.objects.filter(field=field, label=2).update(qc_flags=["out_of_focus"])
    cells = {cell["label"]: cell for cell in selectors.viewer_cells(field=field)}
    assert cells[2]["qc_flags"] == ["out_of_focus"] and cells[1]["qc_flags"] == []
    assert set(cells[1]["measurements"]) <= set(selectors.PANEL_MEASUREMENTS)
    assert cells[1]["measurements"]["area_px"] == cells[1]["area_px"]
    client.force_login(owner)
    page = client.get(reverse("field-detail", args=[field.pk])).content.decode()
    assert "data-cell-measurements" in page and "js/measurements.js" in page
    assert reverse("job-features-csv", args=[measured_job.pk]) in page
    gallery = client.get(reverse("job-gallery", args=[measured_job.pk]), {"qc": "out_of_focus"})
    assert gallery.status_code == 200


def test_an_upload_with_a_bad_scale_is_refused_with_a_sentence(owner, channel_uploads, ml_settings):
    from cells.uploads import JobInputError

    with pytest.raises(JobInputError) as refused:
        intake.job_create(
            owner=owner,
            uploads=[FieldUpload(name="f1", channel_files=channel_uploads(field_id="f1", size_px=64))],
            nucleus_diameter_px=-3,
        )
    assert "nucleus diameter must be a positive number" in refused.value.field_errors["scale"]


def test_qc_settings_reach_the_worker(ml_settings):
    from django.core.exceptions import ImproperlyConfigured

    from cells import ml_config

    ml_settings.ML_QC_THRESHOLDS = {"min_solidity": "0.7"}
    ml_settings.ML_MEASURE_SCATTERING = True
    options = ml_config.measure_options()
    assert options.qc.min_solidity == 0.7 and options.scattering is True and options.texture is True
    ml_settings.ML_QC_THRESHOLDS = {"min_soliditee": "0.7"}
    with pytest.raises(ImproperlyConfigured, match="Unknown quality-control threshold 'min_soliditee'"):
        ml_config.measure_options()
    assert np.isfinite(options.qc.out_of_focus_ratio)


def test_an_ome_tiff_upload_maps_its_named_channels(owner_api, ml_settings):
    import tifffile
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.factories import field_arrays

    ml_settings.ML_MODEL_PATH = ""
    arrays = field_arrays(size_px=128, bit_depth=16)
    planes = np.stack([arrays["blue"], arrays["green"]])
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, planes, ome=True, metadata={"axes": "CYX", "Channel": {"Name": ["nuc", "prot"]}})

    def upload(mapping: str):
        data = {"files": [SimpleUploadedFile("scan.ome.tif", buffer.getvalue(), content_type="image/tiff")]}
        return owner_api.post("/api/jobs/", {**data, "channel_mapping": mapping}, format="multipart")

    refused = upload("")
    assert refused.status_code == 400 and "'nuc' is not recognised" in json.dumps(refused.json())
    created = upload('{"nuc": "blue", "prot": "green"}')
    assert created.status_code == 201, created.json()
    from cells.models import Job

    job = Job.objects.get(pk=created.json()["id"])
    assert job.channel_mapping == {"nuc": "blue", "prot": "green"}
    field = job.fields.get()
    processing.field_process(field_id=field.pk)
    field.refresh_from_db()
    assert field.status == "done" and field.channels_used[0] == "blue"


def test_a_classical_classifier_is_registered_listed_and_runs_on_a_job(owner, channel_uploads, ml_settings, tmp_path):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from cells import registry
    from cells.models import RegisteredModel
    from ml.classical.classifier import save_classical
    from ml.classical.training import train_classical
    from tests.ml.classical.test_classical import _cells

    owner.is_staff = True
    owner.save()
    path = tmp_path / "baseline.skops"
    save_classical(path, train_classical(_cells(), kind="svm", feature_set="haralick", name="baseline"))
    upload = SimpleUploadedFile("baseline.skops", path.read_bytes())
    model = registry.model_import(owner=owner, upload=upload, visibility=RegisteredModel.Visibility.SHARED)
    assert model.format == "hpaweb-classical" and model.input_size_px == 128 and model.name == "baseline"
    listed = [info.model.pk for info in selectors.model_list(user=owner) if info.model is not None]
    assert model.pk in listed
    ml_settings.ML_MODEL_PATH = ""
    job = intake.job_create(
        owner=owner,
        uploads=[FieldUpload(name="f1", channel_files=channel_uploads(field_id="f1", size_px=256))],
        classifier_id=model.pk,
    )
    field = job.fields.get()
    processing.field_process(field_id=field.pk)
    field.refresh_from_db()
    assert field.status == "done" and field.classifier_id == model.pk
    probabilities = np.array(list(field.cells.values_list("probabilities", flat=True)))
    assert probabilities.shape == (4, 19) and probabilities[:, [0, 16]].sum() > 0
