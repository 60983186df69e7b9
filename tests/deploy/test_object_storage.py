"""Media in S3-compatible object storage (django-storages): a field uploaded through the API is
stored, processed and exported from a local S3 endpoint (moto's server on loopback), and nothing
touches MEDIA_ROOT."""

import io
import socket
import zipfile

import boto3
import numpy as np
import pytest
from PIL import Image

from cells import intake, processing
from cells.models import Job

pytestmark = pytest.mark.django_db

BUCKET = "hpaweb-media"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def s3_endpoint(monkeypatch):
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for name, value in {
        "AWS_ACCESS_KEY_ID": "test-key",
        "AWS_SECRET_ACCESS_KEY": "test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    yield endpoint
    server.stop()


@pytest.fixture
def s3_media(settings, s3_endpoint):
    """The default storage in a fresh bucket, configured as HPAWEB_S3_BUCKET would; its boto3 bucket."""
    bucket = boto3.resource("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": BUCKET,
                "endpoint_url": s3_endpoint,
                "region_name": "us-east-1",
                "default_acl": None,
                "querystring_auth": True,
                "file_overwrite": False,
            },
        },
    }
    return bucket


def _keys(bucket) -> list[str]:
    return sorted(item.key for item in bucket.objects.all())


def test_a_field_uploaded_through_the_api_is_stored_processed_and_exported_from_s3(
    owner_api, channel_uploads, sent_to_worker, ml_settings, s3_media, media_files, django_capture_on_commit_callbacks
):
    ml_settings.ML_MODEL_PATH = ""
    files = list(channel_uploads(field_id="plate1-A3", size_px=256).values())
    with django_capture_on_commit_callbacks(execute=True):
        job = owner_api.post("/api/jobs/", {"name": "plate 1", "files": files}, format="multipart").json()
    (field_id,) = sent_to_worker
    assert len([key for key in _keys(s3_media) if key.endswith(".png")]) == 4

    processing.field_process(field_id=field_id)  # what the worker does, reading and writing through S3

    assert owner_api.get(f"/api/jobs/{job['id']}/").json()["status"] == "done"
    submission = owner_api.get(f"/api/jobs/{job['id']}/submission.csv")
    assert b"".join(submission.streaming_content if submission.streaming else [submission.content]).decode() == (
        "ID,ImageWidth,ImageHeight,PredictionString\nplate1-A3,256,256,\n"
    )
    labels = owner_api.get(f"/api/fields/{field_id}/labels/cells.png")
    assert labels.status_code == 200
    cell_labels = np.asarray(Image.open(io.BytesIO(b"".join(labels.streaming_content))))
    assert (cell_labels.shape, int(cell_labels.max())) == ((256, 256), 4)
    archive = owner_api.get(f"/api/jobs/{job['id']}/labels.zip")
    names = zipfile.ZipFile(io.BytesIO(b"".join(archive.streaming_content))).namelist()
    assert {"plate1-A3_cells.png", "plate1-A3_nuclei.png"} <= set(names)
    assert media_files() == []  # nothing went to local disk

    with django_capture_on_commit_callbacks(execute=True):
        intake.job_delete(job=Job.objects.get(pk=job["id"]))
    assert _keys(s3_media) == []
