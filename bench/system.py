"""Fields per minute through the running product, with 1 and then 2 worker processes.

The product runs as `make run` runs it (gunicorn, one Celery worker with --concurrency N,
settings `hpaweb.settings.local` without debug), on the Redis broker and a throwaway PostgreSQL
database (SQLite when no PostgreSQL server answers). The fields are uploaded as one job through
the REST API with an API token; the clock runs from the upload's 201 response (the fields are
queued by then) until the job is finished. Each worker count first processes one small field
per worker process, so model loading is not charged to the measured job.
"""

import contextlib
import datetime
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from bench.common import REPO_ROOT, markdown_table, summary

WORKER_COUNTS: tuple[int, ...] = (1, 2)
WARM_UP_SIZE_PX = 256
STARTUP_TIMEOUT_S = 180.0
JOB_TIMEOUT_S = 1800.0
POLL_INTERVAL_S = 0.5
ADMIN_USER = "bench"


def run(field_files: Sequence[dict[str, Path]], *, broker_url: str, postgres_url: str, command: str) -> dict:
    """Measure fields per minute for each count in WORKER_COUNTS; a dict with "skipped" when Redis is unreachable."""
    section = {"measured_at": datetime.datetime.now().isoformat(timespec="seconds"), "command": command}
    problem = _redis_problem(broker_url)
    if problem:
        print(f"System benchmark skipped: {problem}\n")
        return {**section, "skipped": problem}
    queue = f"hpaweb-bench-{uuid.uuid4().hex[:12]}"
    with (
        tempfile.TemporaryDirectory(prefix="hpaweb-bench-system-") as var_dir,
        _throwaway_database(postgres_url, Path(var_dir)) as (database_url, database),
    ):
        password = uuid.uuid4().hex
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "hpaweb.settings.local",
            "DJANGO_DEBUG": "0",
            "HPAWEB_VAR_DIR": var_dir,
            "MEDIA_ROOT": str(Path(var_dir) / "media"),
            "DATABASE_URL": database_url,
            "CELERY_BROKER_URL": broker_url,
            "CELERY_QUEUE": queue,
            "HPAWEB_ADMIN_USER": ADMIN_USER,
            "HPAWEB_ADMIN_PASSWORD": password,
        }
        for step in (["migrate", "--noinput"], ["ensure_admin"]):
            subprocess.run(
                [sys.executable, "manage.py", *step], cwd=REPO_ROOT, env=env, check=True, capture_output=True
            )
        try:
            with _web_server(env, Path(var_dir) / "web.log") as address:
                client = _ApiClient(address, token=_api_token(address, password))
                warm_up_files = _warm_up_field_files(Path(var_dir) / "warm-up")
                runs = [
                    _measure(
                        client,
                        env,
                        field_files,
                        warm_up_files,
                        workers=workers,
                        log_path=Path(var_dir) / f"worker-{workers}.log",
                    )
                    for workers in WORKER_COUNTS
                ]
        finally:
            _purge_queue(broker_url, queue)
    return {
        **section,
        "broker": _without_password(broker_url),
        "database": database,
        "fields": len(field_files),
        "size_px": _side_px(field_files[0]),
        "runs": runs,
    }


def report(section: dict) -> str:
    title = "## System: fields through the API, Celery workers on Redis"
    if "skipped" in section:
        return f"{title}\n\nNot measured: {section['skipped']}\n"
    rows = []
    single = section["runs"][0]["fields_per_min"]
    for run_ in section["runs"]:
        rows.append([
            str(run_["workers"]), str(run_["torch_threads"]), f"{run_['upload_s']:.1f}", f"{run_['seconds']:.1f}",
            f"{run_['fields_per_min']:.1f}", f"{run_['fields_per_min'] / single:.2f} x",
            f"{run_['field_seconds']['median']:.2f} / {run_['field_seconds']['max']:.2f}",
        ])  # fmt: skip
    header = ["worker processes", "torch threads each", "upload s", "queued to done s", "fields/min",
              "vs 1 worker", "per field median / max s"]  # fmt: skip
    return "\n".join([
        title, "",
        f"{section['fields']} synthetic {section['size_px']} px fields in one job, database: {section['database']}.", "",
        markdown_table(header, rows, align="rrrrrrr"), "",
    ])  # fmt: skip


def _measure(client: "_ApiClient", env: dict, field_files, warm_up_files, *, workers: int, log_path: Path) -> dict:
    threads = int(os.environ.get("ML_TORCH_THREADS") or max(1, len(os.sched_getaffinity(0)) // workers))
    worker_env = {**env, "ML_TORCH_THREADS": str(threads)}
    with _celery_worker(worker_env, workers=workers, log_path=log_path):
        warm_up = client.submit([warm_up_files] * workers, name=f"warm-up {workers}")
        client.wait(warm_up["id"], log_path=log_path)
        print(f"Submitting {len(field_files)} fields to {workers} worker process(es) ...", flush=True)
        started = time.perf_counter()
        job = client.submit(field_files, name=f"{workers} workers")
        queued = time.perf_counter()
        job = client.wait(job["id"], log_path=log_path)
        finished = time.perf_counter()
    failed = [field["name"] for field in job["fields"] if field["status"] != "done"]
    if failed:
        raise RuntimeError(f"Fields {failed} did not finish; the worker log is {log_path}.")
    field_seconds = [
        (_timestamp(field["finished_at"]) - _timestamp(field["started_at"])).total_seconds() for field in job["fields"]
    ]
    return {
        "workers": workers,
        "torch_threads": threads,
        "upload_s": queued - started,
        "seconds": finished - queued,
        "fields_per_min": 60 * len(field_files) / (finished - queued),
        "field_seconds": summary(field_seconds),
        "cells": sum(field["cell_count"] for field in job["fields"]),
    }


class _ApiClient:
    """The few REST calls the benchmark makes, with token authentication."""

    def __init__(self, address: tuple[str, int], *, token: str) -> None:
        self.address = address
        self.headers = {"Authorization": f"Token {token}"}

    def submit(self, field_files: Sequence[dict[str, Path]], *, name: str) -> dict:
        """Upload fields as one job; every field takes its name from its files, made unique by position."""
        files = []
        for index, channel_files in enumerate(field_files):
            for channel, path in channel_files.items():
                files.append(("files", f"f{index:03d}_{channel}.png", Path(path).read_bytes()))
        body, content_type = _multipart({"name": name}, files)
        status, payload = _request(
            self.address, "POST", "/api/jobs/", body=body, headers={**self.headers, "Content-Type": content_type}
        )
        if status != 201:
            raise RuntimeError(f"The upload was refused ({status}): {payload}")
        return payload

    def wait(self, job_id: int, *, log_path: Path) -> dict:
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while time.monotonic() < deadline:
            _, job = _request(self.address, "GET", f"/api/jobs/{job_id}/", headers=self.headers)
            if job["status"] in {"done", "failed", "partial"}:
                return job
            time.sleep(POLL_INTERVAL_S)
        raise RuntimeError(f"Job {job_id} was not finished after {JOB_TIMEOUT_S:.0f} s; see {log_path}.")


def _api_token(address: tuple[str, int], password: str) -> str:
    body, content_type = _multipart({"username": ADMIN_USER, "password": password}, [])
    status, payload = _request(address, "POST", "/api/token/", body=body, headers={"Content-Type": content_type})
    if status != 200:
        raise RuntimeError(f"No API token ({status}): {payload}")
    return payload["token"]


def _request(
    address: tuple[str, int], method: str, path: str, *, body: bytes | None = None, headers: dict | None = None
):
    connection = http.client.HTTPConnection(*address, timeout=600)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        text = response.read().decode()
        return response.status, json.loads(text) if text.startswith(("{", "[")) else text
    finally:
        connection.close()


def _multipart(fields: dict[str, str], files: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, filename, content in files:
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\nContent-Type: image/png\r\n\r\n'
        parts += [head.encode(), content, b"\r\n"]
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


@contextlib.contextmanager
def _web_server(env: dict, log_path: Path) -> Iterator[tuple[str, int]]:
    address = ("127.0.0.1", _free_port())
    command = [sys.executable, "-m", "gunicorn", "hpaweb.wsgi", "--bind", f"{address[0]}:{address[1]}",
               "--workers", "1", "--threads", "4", "--timeout", "600"]  # fmt: skip
    with _process(command, env, log_path):
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            with contextlib.suppress(OSError), socket.create_connection(address, timeout=1):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"The web server did not start; see {log_path}.")
            time.sleep(0.2)
        yield address


@contextlib.contextmanager
def _celery_worker(env: dict, *, workers: int, log_path: Path) -> Iterator[None]:
    command = [sys.executable, "-m", "celery", "-A", "hpaweb", "worker", "--loglevel=INFO",
               f"--concurrency={workers}", "-Q", ",".join(env["CELERY_QUEUE"] + suffix for suffix in ("", "-cpu", "-gpu", "-training")), "--hostname", f"bench-{workers}-{os.getpid()}@%h"]  # fmt: skip
    with _process(command, env, log_path):
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while " ready." not in log_path.read_text():
            if time.monotonic() > deadline:
                raise RuntimeError(f"The Celery worker did not start; see {log_path}.")
            time.sleep(0.2)
        yield


@contextlib.contextmanager
def _process(command: list[str], env: dict, log_path: Path) -> Iterator[subprocess.Popen]:
    with log_path.open("w") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def _throwaway_database(postgres_url: str, var_dir: Path) -> Iterator[tuple[str, str]]:
    """(database URL, description): a fresh PostgreSQL database dropped afterwards, else SQLite."""
    try:
        import psycopg

        admin = psycopg.connect(postgres_url, autocommit=True, connect_timeout=3)
    except Exception as error:  # the driver's errors vary with how the server is unreachable
        print(f"PostgreSQL at {_without_password(postgres_url)} is unreachable ({error}); using SQLite.", flush=True)
        yield f"sqlite:///{var_dir / 'db.sqlite3'}", "SQLite (no PostgreSQL server answered)"
        return
    name = f"hpaweb_bench_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            version = admin.execute("SHOW server_version").fetchone()[0]
            yield urlunsplit(urlsplit(postgres_url)._replace(path=f"/{name}")), f"PostgreSQL {version}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _redis_problem(broker_url: str) -> str | None:
    if not broker_url.startswith(("redis://", "rediss://")):
        return f"the broker {broker_url} is not Redis; pass --broker-url redis://HOST:PORT/DB."
    import redis

    try:
        redis.Redis.from_url(broker_url, socket_connect_timeout=2).ping()
    except redis.RedisError as error:
        return f"Redis at {_without_password(broker_url)} is unreachable ({error}); start Redis or pass --broker-url."
    return None


def _purge_queue(broker_url: str, queue: str) -> None:
    import redis

    client = redis.Redis.from_url(broker_url, socket_connect_timeout=2)
    for name in (queue, *(f"{queue}-{kind}" for kind in ("cpu", "gpu", "training"))):
        client.delete(name, f"_kombu.binding.{name}")


def _warm_up_field_files(folder: Path) -> dict[str, Path]:
    from ml.synth import write_dataset

    write_dataset(folder, n_images=1, seed=0, size_px=WARM_UP_SIZE_PX, bit_depth=8)
    return {path.stem.rsplit("_", 1)[1]: path for path in sorted(folder.glob("*.png"))}


def _side_px(channel_files: dict[str, Path]) -> int:
    from PIL import Image

    with Image.open(channel_files["green"]) as image:
        return max(image.size)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _timestamp(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))
