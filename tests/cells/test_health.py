"""/livez, /healthz and /metrics: for probes and Prometheus, no sign-in, past host checks and redirects."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from cells import processing
from cells.models import Field

pytestmark = pytest.mark.django_db


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_livez_answers_any_host_over_plain_http_even_behind_a_tls_proxy(settings):
    settings.SECURE_SSL_REDIRECT = True
    response = Client().get("/livez", HTTP_HOST="10.1.2.3:8000")
    assert (response.status_code, response.json(), response["Cache-Control"]) == (200, {"status": "ok"}, "no-store")
    assert Client().get("/healthz?live=1", HTTP_HOST="10.1.2.3:8000").json() == {"status": "ok"}


def test_healthz_reports_each_check_and_fails_without_a_worker(settings):
    response = Client().get("/healthz", HTTP_HOST="10.1.2.3")
    body = response.json()
    assert (response.status_code, body["status"]) == (503, "fail")
    assert {name: check["ok"] for name, check in body["checks"].items()} == {
        "database": True,
        "broker": True,
        "workers": False,
        "disk": True,
    }
    assert "No worker answered" in body["checks"]["workers"]["error"]
    assert body["checks"]["disk"]["free_bytes"] > 0


def test_healthz_fails_when_media_has_too_little_free_space(settings):
    settings.HPAWEB_HEALTH_MIN_FREE_BYTES = 1 << 62
    disk = Client().get("/healthz").json()["checks"]["disk"]
    assert disk["ok"] is False and "free under MEDIA_ROOT" in disk["error"]


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_healthz_is_200_with_a_live_worker(worker_process):
    process, log_path = worker_process
    deadline = timezone.now() + timedelta(seconds=90)
    while timezone.now() < deadline:
        response = Client().get("/healthz")
        if response.status_code == 200:
            break
    assert response.status_code == 200, (response.content, log_path.read_text()[-2000:])
    assert response.json()["checks"]["workers"]["workers"][0].startswith("e2e-")


def test_metrics_report_queue_depth_fields_by_status_and_processing_seconds(stored_field, sent_to_worker):
    # Derived from the database at scrape time, so every web process reports the same numbers.
    done, failed, queued = stored_field(name="a"), stored_field(name="b"), stored_field(name="c")
    now = timezone.now()
    Field.objects.filter(pk=done.pk).update(
        status=Field.Status.DONE, started_at=now - timedelta(seconds=3), finished_at=now
    )
    processing.field_fail(field_id=failed.pk, reason="broken")
    Field.objects.filter(pk=failed.pk).update(started_at=now - timedelta(seconds=40), finished_at=now)

    response = Client().get("/metrics", HTTP_HOST="10.1.2.3")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain; version=")
    samples = _samples(response.content.decode())
    assert samples[("hpaweb_fields", (("status", "done"),))] == 1
    assert samples[("hpaweb_fields", (("status", "failed"),))] == 1
    assert samples[("hpaweb_fields", (("status", "queued"),))] == 1
    done_buckets = {
        dict(labels)["le"]: value
        for (name, labels), value in samples.items()
        if name == "hpaweb_field_processing_seconds_bucket" and dict(labels)["status"] == "done"
    }
    assert (done_buckets["2.0"], done_buckets["5.0"], done_buckets["+Inf"]) == (0, 1, 1)
    assert samples[("hpaweb_field_processing_seconds_sum", (("status", "failed"),))] == 40.0
    assert samples[("hpaweb_field_processing_seconds_count", (("status", "failed"),))] == 1
    assert samples[("hpaweb_broker_up", ())] == 1
    assert samples[("hpaweb_queue_depth", (("queue", settings.CELERY_TASK_DEFAULT_QUEUE),))] == 0
    assert queued.status == Field.Status.QUEUED


def test_metrics_ask_for_the_bearer_token_when_one_is_set(settings):
    settings.HPAWEB_METRICS_TOKEN = "scrape-secret"
    assert Client().get("/metrics").status_code == 401
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret").status_code == 200
