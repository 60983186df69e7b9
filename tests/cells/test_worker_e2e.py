"""End to end through a real Celery worker process: upload by API, wait, check the stored results."""

import csv
import io
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cells.models import Field
from ml.encoding import decode_kaggle_mask, decode_rle, parse_prediction_string

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def _wait_for_job(api, job_id: int, process, log_path: Path, timeout_s: float = 240.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = api.get(f"/api/jobs/{job_id}/").json()
        if body["status"] in {"done", "failed", "partial"}:
            return body
        assert process.poll() is None, f"worker exited early:\n{log_path.read_text()[-4000:]}"
        time.sleep(0.5)
    pytest.fail(f"job not finished after {timeout_s} s; worker log:\n{log_path.read_text()[-4000:]}")


def test_uploaded_field_is_processed_by_a_real_worker(owner_api, channel_uploads, worker_process):
    process, log_path = worker_process
    response = owner_api.post("/api/jobs/", {"name": "e2e", **channel_uploads(bit_depth=16)}, format="multipart")
    assert response.status_code == 201, response.content
    job = _wait_for_job(owner_api, response.json()["id"], process, log_path)
    assert job["status"] == "done", job

    field = Field.objects.get(pk=job["fields"][0]["id"])
    assert field.bit_depth == 16
    with field.cell_labels.open("rb") as handle:
        cell_labels = np.asarray(Image.open(handle))
    cells = owner_api.get(f"/api/jobs/{job['id']}/cells/").json()["results"]
    assert len(cells) == 4 == len(np.unique(cell_labels)) - 1
    for cell in cells:
        assert np.array_equal(decode_rle(cell["mask_rle"]), cell_labels == cell["label"])

    rows = list(csv.DictReader(io.StringIO(owner_api.get(f"/api/jobs/{job['id']}/submission.csv").getvalue().decode())))
    assert [(r["ID"], r["ImageWidth"], r["ImageHeight"]) for r in rows] == [("f1", "512", "512")]
    if field.model_name:
        triples = parse_prediction_string(rows[0]["PredictionString"])
        masks = {mask for _label, _confidence, mask in triples}
        assert len(masks) == 4
        decoded = [decode_kaggle_mask(mask, height=512, width=512) for mask in masks]
        assert sorted(int(m.sum()) for m in decoded) == sorted(cell["area_px"] for cell in cells)
        assert all(cell["model_name"] == field.model_name for cell in cells)
    else:
        assert rows[0]["PredictionString"] == ""
