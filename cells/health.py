"""Health and metrics for load balancers, probes and Prometheus; no sign-in, cheap to call.

- /livez: the process answers (a liveness probe; touches nothing else).
- /healthz: the database, the broker, at least one live worker (a Celery control ping) and free
  space under MEDIA_ROOT (local storage only), as JSON; 200 when all pass, else 503.
  /healthz?live=1 is /livez.
- /metrics: Prometheus text. Queue depth per queue comes from the broker; fields by status and
  the processing-time histogram come from the database (fields' status, started_at and
  finished_at), so the worker needs no instrumenting and every web process reports the same.

ProbeMiddleware answers these paths before host validation and the HTTPS redirect, because
kubelets and Prometheus reach pods by IP over plain HTTP.
"""

import shutil
import time
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CollectorRegistry, GaugeMetricFamily, HistogramMetricFamily

from cells.models import Field
from hpaweb.celery import app as celery_app

# Seconds; fields take from about a second (small, CPU) to minutes (large, HPA segmentation on CPU).
PROCESSING_BUCKETS_S = (1, 2, 5, 10, 30, 60, 120, 300, 600)
WORKER_PING_TIMEOUT_S = 0.5
BROKER_TIMEOUT_S = 2.0


def _check_database() -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return {"ok": True}


def _check_broker() -> dict:
    with celery_app.connection_for_read() as broker:
        broker.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_S)
    return {"ok": True}


def _check_workers() -> dict:
    replies = celery_app.control.ping(timeout=WORKER_PING_TIMEOUT_S) or []
    workers = sorted(name for reply in replies for name in reply)
    if not workers:
        return {"ok": False, "error": "No worker answered a ping; start one (celery -A hpaweb worker)."}
    return {"ok": True, "workers": workers}


def _check_disk() -> dict:
    if settings.STORAGES["default"]["BACKEND"] != "django.core.files.storage.FileSystemStorage":
        return {"ok": True, "skipped": "media are in object storage"}
    media = settings.MEDIA_ROOT
    media.mkdir(parents=True, exist_ok=True)
    free_bytes = shutil.disk_usage(media).free
    needed = settings.HPAWEB_HEALTH_MIN_FREE_BYTES
    if free_bytes < needed:
        return {"ok": False, "free_bytes": free_bytes, "error": f"Under {needed} bytes free under MEDIA_ROOT."}
    return {"ok": True, "free_bytes": free_bytes}


CHECKS: dict[str, Callable[[], dict]] = {
    "database": _check_database,
    "broker": _check_broker,
    "workers": _check_workers,
    "disk": _check_disk,
}


def livez(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def healthz(request: HttpRequest) -> JsonResponse:
    if request.GET.get("live"):
        return livez(request)
    results = {}
    for name, check in CHECKS.items():
        started = time.perf_counter()
        try:
            result = check()
        except Exception as error:  # a probe reports what failed; it never raises
            result = {"ok": False, "error": f"{type(error).__name__}: {error}"}
        results[name] = {**result, "seconds": round(time.perf_counter() - started, 4)}
    healthy = all(result["ok"] for result in results.values())
    return JsonResponse({"status": "ok" if healthy else "fail", "checks": results}, status=200 if healthy else 503)


def queue_depths() -> dict[str, int]:
    """Messages waiting in each queue the app sends to (the default queue and any configured)."""
    depths = {}
    with celery_app.connection_for_read() as broker:
        broker.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_S)
        channel = broker.default_channel
        for name in sorted(celery_app.amqp.queues):
            try:
                depths[name] = channel.queue_declare(queue=name, passive=True).message_count
            except broker.channel_errors:  # a queue nobody has sent to yet holds nothing
                depths[name] = 0
    return depths


class _DatabaseCollector:
    """Metrics computed from the database at scrape time."""

    def collect(self):
        by_status = dict(Field.objects.values_list("status").annotate(count=Count("pk")).order_by())
        fields = GaugeMetricFamily("hpaweb_fields", "Fields in the database by status.", labels=["status"])
        for status in Field.Status.values:
            fields.add_metric([status], by_status.get(status, 0))
        yield fields

        duration = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
        timed = Field.objects.filter(
            status__in=[Field.Status.DONE, Field.Status.FAILED], started_at__isnull=False, finished_at__isnull=False
        ).annotate(duration=duration)
        histogram = HistogramMetricFamily(
            "hpaweb_field_processing_seconds",
            "Time from a field's start to its end on a worker, by outcome (from the database).",
            labels=["status"],
        )
        for status in (Field.Status.DONE, Field.Status.FAILED):
            aggregates = {
                f"le_{bound}": Count("pk", filter=Q(duration__lte=timedelta(seconds=bound)))
                for bound in PROCESSING_BUCKETS_S
            }
            row = timed.filter(status=status).aggregate(count=Count("pk"), total=Sum("duration"), **aggregates)
            buckets = [(str(float(bound)), row[f"le_{bound}"]) for bound in PROCESSING_BUCKETS_S]
            buckets.append(("+Inf", row["count"]))
            total_s = row["total"].total_seconds() if row["total"] else 0.0
            histogram.add_metric([status], buckets, total_s)
        yield histogram


class _BrokerCollector:
    def collect(self):
        depth = GaugeMetricFamily("hpaweb_queue_depth", "Tasks waiting in each Celery queue.", labels=["queue"])
        up = GaugeMetricFamily("hpaweb_broker_up", "1 when the broker answered this scrape.")
        try:
            depths = queue_depths()
        except Exception:
            up.add_metric([], 0)
        else:
            up.add_metric([], 1)
            for name, count in depths.items():
                depth.add_metric([name], count)
        yield depth
        yield up


_registry = CollectorRegistry()
_registry.register(_DatabaseCollector())
_registry.register(_BrokerCollector())


def metrics(request: HttpRequest) -> HttpResponse:
    token = settings.HPAWEB_METRICS_TOKEN
    if token and request.headers.get("Authorization") != f"Bearer {token}":
        response = HttpResponse("Send Authorization: Bearer <HPAWEB_METRICS_TOKEN>.\n", status=401)
        response["WWW-Authenticate"] = "Bearer"
        return response
    return HttpResponse(generate_latest(_registry), content_type=CONTENT_TYPE_LATEST)


PROBES = {"/livez": livez, "/healthz": healthz, "/metrics": metrics}


class ProbeMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        view = PROBES.get(request.path_info.rstrip("/")) if request.method in ("GET", "HEAD") else None
        if view is None:
            return self.get_response(request)
        response = view(request)
        response["Cache-Control"] = "no-store"
        return response
