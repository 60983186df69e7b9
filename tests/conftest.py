import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from rest_framework.test import APIClient

from tests.factories import field_pngs


@pytest.fixture
def owner(django_user_model):
    return django_user_model.objects.create_user(username="owner", password="owner-password")


@pytest.fixture
def outsider(django_user_model):
    return django_user_model.objects.create_user(username="outsider", password="outsider-password")


@pytest.fixture
def owner_api(owner):
    client = APIClient()
    client.force_authenticate(owner)
    return client


@pytest.fixture
def outsider_api(outsider):
    client = APIClient()
    client.force_authenticate(outsider)
    return client


@pytest.fixture
def channel_uploads():
    """A fresh set of uploaded files for one small field named f1."""

    def make(*, field_id: str = "f1", channels=("red", "green", "blue", "yellow"), **kwargs):
        pngs = field_pngs(**kwargs)
        return {
            name: SimpleUploadedFile(f"{field_id}_{name}.png", pngs[name], content_type="image/png")
            for name in channels
        }

    return make


@pytest.fixture
def stored_field(owner, channel_uploads):
    """Makes one field as an upload leaves it: stored by `intake.job_create` and queued (`channel_uploads` options)."""
    from cells import intake
    from cells.uploads import FieldUpload

    def make(*, name: str = "f1", segmentation_backend: str | None = None, **upload_options):
        uploads = [FieldUpload(name=name, channel_files=channel_uploads(field_id=name, **upload_options))]
        return intake.job_create(owner=owner, uploads=uploads, segmentation_backend=segmentation_backend).fields.get()

    return make


@pytest.fixture
def sent_to_worker(monkeypatch):
    """The ids of the fields sent to the worker, in order; nothing is sent."""
    sent = []
    monkeypatch.setattr("cells.tasks.process_field.delay", sent.append)
    return sent


@pytest.fixture
def ml_settings(settings):
    """Settings for processing fields in the test process; clears the per-process model cache."""
    from cells import ml_config

    ml_config.get_segmenter.cache_clear()
    ml_config.loaded_classifiers.clear()
    yield settings
    ml_config.get_segmenter.cache_clear()
    ml_config.loaded_classifiers.clear()


@pytest.fixture
def tiny_classifier_file(tmp_path) -> Path:
    """An untrained classifier checkpoint that runs in milliseconds (32 px crops)."""
    from tests.ml.support import save_tiny_classifier

    return save_tiny_classifier(tmp_path / "tiny-classifier.pt")


@pytest.fixture(autouse=True)
def isolated_media(settings, tmp_path):
    """Each test stores files in its own folder, so tests can count what was stored."""
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def media_files(isolated_media):
    """Lists every file stored in this test's media folder, sorted."""

    def list_files() -> list[Path]:
        media = Path(isolated_media)
        return sorted(path for path in media.rglob("*") if path.is_file()) if media.exists() else []

    return list_files


REPO_ROOT = Path(__file__).resolve().parents[1]


def _test_database_url() -> str:
    """The URL of the database this test runs against, for the worker process to share."""
    name = connection.settings_dict["NAME"]
    if connection.vendor == "sqlite":
        return f"sqlite:///{name}"
    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture
def worker_process(tmp_path, isolated_media):
    """A real Celery worker process sharing the test database, media folder and queue; (process, log path)."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "hpaweb.settings.test",
        "DATABASE_URL": _test_database_url(),
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
    }
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "hpaweb",
                "worker",
                "--loglevel=INFO",
                "--concurrency=1",
                "-Q",
                ",".join([settings.CELERY_TASK_DEFAULT_QUEUE, *settings.HPAWEB_QUEUES.values()]),
                "--hostname",
                f"e2e-{os.getpid()}@%h",
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    yield process, log_path
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
