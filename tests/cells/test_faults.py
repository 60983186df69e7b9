"""Faults on real parts: a broker that is stopped, workers killed with SIGKILL or stopped at their time
limits, a job deleted while it is processed, zip bombs, oversized requests, a full disk, `make run`
stopped. After each: no ghost job, no stuck field, no orphan file, and a sentence for the user."""

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import zipfile
from pathlib import Path

import kombu.pools
import pytest
import tifffile
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile

from cells.models import Cell, Field, FieldImage, Job
from hpaweb.celery import app as celery_app
from tests.conftest import REPO_ROOT, _test_database_url
from tests.factories import field_arrays, field_pngs

BROKER_DOWN = (
    "The processing queue cannot be reached right now, so the upload was not stored; "
    "send it again in a minute, or tell the administrator if this goes on."
)


def _wait_for(condition, *, timeout_s: float, what: str, log: Path | None = None, every_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every_s)
    tail = log.read_text()[-4000:] if log is not None and log.exists() else ""
    pytest.fail(f"{what}: not after {timeout_s} s\n{tail}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _files_under(folder: Path) -> list[Path]:
    return sorted(path for path in Path(folder).rglob("*") if path.is_file()) if Path(folder).exists() else []


def _folders_under(folder: Path) -> list[Path]:
    return sorted(path for path in Path(folder).rglob("*") if path.is_dir()) if Path(folder).exists() else []


def _field_files(field_id: str = "f1", **options) -> list[SimpleUploadedFile]:
    return [
        SimpleUploadedFile(f"{field_id}_{channel}.png", data, content_type="image/png")
        for channel, data in field_pngs(**options).items()
    ]


class _Worker:
    """A real Celery worker process of its own session (so SIGKILL reaches its pool too)."""

    def __init__(self, tmp_path: Path, *, env: dict[str, str] | None = None, beat: bool = False, name: str = "w"):
        self.log = tmp_path / f"worker-{name}.log"
        command = [sys.executable, "-m", "celery", "-A", "hpaweb", "worker", "--loglevel=INFO", "--concurrency=1"]
        command += [
            "-Q",
            ",".join([settings.CELERY_TASK_DEFAULT_QUEUE, *settings.HPAWEB_QUEUES.values()]),
            "--hostname",
            f"faults-{name}-{os.getpid()}@%h",
        ]
        if beat:
            command += ["-B", "-s", str(tmp_path / f"beat-{name}")]
        full_env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "hpaweb.settings.test",
            "DATABASE_URL": _test_database_url(),
            "MEDIA_ROOT": str(settings.MEDIA_ROOT),
            "ML_MODEL_PATH": "",
            **(env or {}),
        }
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                command, cwd=REPO_ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self, timeout_s: float = 120) -> None:
        _wait_for(lambda: "ready." in self.log.read_text(), timeout_s=timeout_s, what="worker ready", log=self.log)

    def kill(self) -> None:
        """SIGKILL to the main process and its pool at once, as `kill -9` of them all."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def pool_pids(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        return [int(pid) for pid in children]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)


@pytest.fixture
def workers(tmp_path):
    started: list[_Worker] = []

    def start(**options) -> _Worker:
        worker = _Worker(tmp_path, name=str(len(started)), **options)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def _field_state(field_id: int) -> tuple:
    return tuple(Field.objects.filter(pk=field_id).values_list("status", "attempts", "error").get())


# 1. Broker down at submit


class _RedisServer:
    def __init__(self, tmp_path: Path) -> None:
        self.port = _free_port()
        self.folder = tmp_path / "redis"
        self.folder.mkdir()
        self.process = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=self.folder,
            stdout=subprocess.DEVNULL,
        )
        _wait_for(self._answers, timeout_s=20, what="redis-server answering")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def queue_length(self, queue: str) -> int:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(f"LLEN {queue}\r\n".encode())
            return int(sock.recv(64).decode().strip().lstrip(":"))


def _queued_tasks() -> int:
    """Messages waiting in this test run's queues, on whichever broker the suite runs (filesystem or Redis)."""
    names = [settings.CELERY_TASK_DEFAULT_QUEUE, *settings.HPAWEB_QUEUES.values()]
    with celery_app.connection_for_write() as connection:
        channel = connection.default_channel
        return sum(channel.queue_declare(queue=name).message_count for name in names)


def _forget_broker_connections() -> None:
    """The app connects anew to whatever broker_url says next (its pools are cached per process)."""
    celery_app.close()
    kombu.pools.reset()
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


@pytest.fixture
def redis_broker(tmp_path, monkeypatch):
    """The web side sends to a redis-server of this test's own, which the test stops and starts."""
    server = _RedisServer(tmp_path)
    server.start()
    saved = (celery_app.conf.broker_url, celery_app.conf.broker_transport_options)
    _forget_broker_connections()
    # Celery reads CELERY_BROKER_URL from the environment before its configuration (CI sets it).
    monkeypatch.setenv("CELERY_BROKER_URL", server.url)
    celery_app.conf.broker_url, celery_app.conf.broker_transport_options = server.url, {}
    yield server
    _forget_broker_connections()
    celery_app.conf.broker_url, celery_app.conf.broker_transport_options = saved
    if server.process.poll() is None:
        server.stop()


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_broker_down_at_submit_answers_503_stores_nothing_and_the_same_upload_works_once_it_is_back(
    owner, owner_api, client, redis_broker, media_files
):
    redis_broker.stop()
    response = owner_api.post("/api/jobs/", {"files": _field_files()}, format="multipart")
    assert (response.status_code, response.json(), response["Retry-After"]) == (503, {"detail": BROKER_DOWN}, "30")
    client.force_login(owner)
    page = client.post("/jobs/new/", {"files": _field_files(), "segmentation_backend": "classical"})
    assert page.status_code == 503 and BROKER_DOWN in page.content.decode() and b'name="files"' in page.content
    assert (Job.objects.count(), Field.objects.count(), media_files()) == (0, 0, [])

    redis_broker.start()
    response = owner_api.post("/api/jobs/", {"files": _field_files()}, format="multipart")
    assert response.status_code == 201
    assert [field["status"] for field in response.json()["fields"]] == ["queued"]
    assert redis_broker.queue_length(settings.HPAWEB_QUEUES["cpu"]) == 1  # a classical field: the CPU queue


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_retry_with_the_broker_down_answers_503_and_leaves_the_field_failed_with_a_sentence(
    owner_api, stored_field, redis_broker
):
    field = stored_field()
    Field.objects.filter(pk=field.pk).update(status=Field.Status.FAILED, error="It broke.")
    redis_broker.stop()
    response = owner_api.post(f"/api/fields/{field.pk}/retry/")
    assert response.status_code == 503 and response["Retry-After"] == "30"
    status, _attempts, error = _field_state(field.pk)
    assert status == "failed" and error.startswith("It could not be run again: the processing queue cannot be reached")


# 2. Fields stuck after a worker crash or the time limits


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_field_whose_pool_process_is_killed_is_queued_again_at_once_and_done(owner_api, workers):
    worker = workers()
    worker.wait_ready()
    job = owner_api.post("/api/jobs/", {"files": _field_files(size_px=1024)}, format="multipart").json()
    field_id = job["fields"][0]["id"]
    _wait_for(lambda: _field_state(field_id)[0] != "queued", timeout_s=60, what="field claimed", log=worker.log)
    for pid in worker.pool_pids():
        os.kill(pid, signal.SIGKILL)
    _wait_for(
        lambda: _field_state(field_id)[0] == "done", timeout_s=120, what="field done after the kill", log=worker.log
    )
    assert _field_state(field_id)[1] == 2


@pytest.mark.worker
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_field_left_running_by_a_worker_killed_whole_is_swept_back_into_the_queue_and_done(
    owner_api, workers, settings
):
    limits = {
        "CELERY_TASK_SOFT_TIME_LIMIT": "10",
        "CELERY_TASK_TIME_LIMIT": "15",
        "HPAWEB_SWEEP_GRACE_S": "1",
        "HPAWEB_SWEEP_INTERVAL_S": "1",
    }
    # The web side agrees with the worker (the sweeper runs in the test's process too).
    settings.CELERY_TASK_SOFT_TIME_LIMIT, settings.CELERY_TASK_TIME_LIMIT, settings.HPAWEB_SWEEP_GRACE_S = 10, 15, 1
    first = workers(env=limits)
    first.wait_ready()
    job = owner_api.post("/api/jobs/", {"files": _field_files(size_px=1024)}, format="multipart").json()
    field_id = job["fields"][0]["id"]
    _wait_for(lambda: _field_state(field_id)[0] != "queued", timeout_s=60, what="field claimed", log=first.log)
    first.kill()
    assert _field_state(field_id)[0] in ("segmenting", "classifying")
    refused = owner_api.post(f"/api/fields/{field_id}/retry/")  # it may still be running somewhere: not yet
    assert refused.status_code == 409

    second = workers(env=limits, beat=True)
    _wait_for(
        lambda: _field_state(field_id)[0] == "done", timeout_s=150, what="swept field done", log=second.log, every_s=0.5
    )
    assert _field_state(field_id)[1] == 2


# A 3072 px field with wavelet scattering measured for each of its cells: several seconds of work on
# any machine, well past a 1 s limit (the pool checks its limits about once a second, and a 3072 px
# field without scattering can be done in under two).
_SLOW_FIELDS = {"ML_MEASURE_SCATTERING": "1"}


def _slow_field_files() -> list[SimpleUploadedFile]:
    """A synthetic 2048 px field of about 70 cells: with scattering (`_SLOW_FIELDS`) several seconds of
    work, well past a 1 s limit and the pool's once-a-second look at it (the few cells of
    `_field_files` can finish within two seconds, before the pool looks again)."""
    import numpy as np

    from ml.constants import CHANNELS
    from ml.synth.field import synthesize_field
    from tests.factories import png_bytes

    image = synthesize_field(np.random.default_rng(0), 2048).image
    return [
        SimpleUploadedFile(f"slow_{channel}.png", png_bytes(np.round(plane * 255).astype(np.uint8)), "image/png")
        for channel, plane in zip(CHANNELS, image, strict=True)
    ]


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_the_workers_own_hard_time_limit_fails_the_field_with_a_sentence_and_it_can_run_again(owner_api, workers):
    # The web side keeps its own limits (600 / 660 s): the worker's are the ones that apply.
    worker = workers(env={"CELERY_TASK_SOFT_TIME_LIMIT": "0", "CELERY_TASK_TIME_LIMIT": "1", **_SLOW_FIELDS})
    worker.wait_ready()
    job = owner_api.post("/api/jobs/", {"files": _slow_field_files()}, format="multipart").json()
    field_id = job["fields"][0]["id"]
    _wait_for(lambda: _field_state(field_id)[0] == "failed", timeout_s=90, what="field failed", log=worker.log)
    assert _field_state(field_id)[2] == (
        "Processing was stopped at the hard time limit of 1 s; try a smaller field or ask the administrator to "
        "raise CELERY_TASK_TIME_LIMIT."
    )
    assert owner_api.post(f"/api/fields/{field_id}/retry/").status_code == 202


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_the_workers_own_soft_time_limit_fails_the_field_with_a_sentence(owner_api, workers):
    worker = workers(env={"CELERY_TASK_SOFT_TIME_LIMIT": "1", "CELERY_TASK_TIME_LIMIT": "60", **_SLOW_FIELDS})
    worker.wait_ready()
    job = owner_api.post("/api/jobs/", {"files": _slow_field_files()}, format="multipart").json()
    field_id = job["fields"][0]["id"]
    _wait_for(lambda: _field_state(field_id)[0] == "failed", timeout_s=90, what="field failed", log=worker.log)
    assert _field_state(field_id)[2].startswith("Processing took longer than the time limit of 1 s;")


# 3. Deleting a running job


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_deleting_a_job_while_the_worker_processes_it_leaves_no_rows_no_files_and_drops_its_tasks(
    owner_api, workers, isolated_media
):
    worker = workers()
    worker.wait_ready()
    files = [upload for index in range(12) for upload in _field_files(f"f{index:02d}", size_px=256)]
    job = owner_api.post("/api/jobs/", {"files": files}, format="multipart").json()
    ids = [field["id"] for field in job["fields"]]
    # Delete while the second field is being stored or analysed, the first one done.
    _wait_for(
        lambda: Field.objects.filter(pk=ids[1]).exclude(status="queued").exists(),
        timeout_s=120,
        what="second field running",
        log=worker.log,
        every_s=0.02,
    )
    deleted_at = time.monotonic()
    assert owner_api.delete(f"/api/jobs/{job['id']}/").status_code == 204
    _wait_for(lambda: _queued_tasks() == 0, timeout_s=30, what="tasks of the deleted job drained", log=worker.log)
    drained_s = time.monotonic() - deleted_at
    assert (Job.objects.count(), Field.objects.count(), Cell.objects.count(), FieldImage.objects.count()) == (
        0,
        0,
        0,
        0,
    )
    _wait_for(lambda: not _files_under(isolated_media), timeout_s=30, what="no files left", log=worker.log)
    assert _folders_under(Path(isolated_media) / "fields") == []
    assert drained_s < 10, f"{len(ids) - 2} tasks took {drained_s:.1f} s to drop"
    assert "Traceback" not in worker.log.read_text()


# 4. Disk exhaustion through uploads


class _TempSpace:
    """The bytes under a folder, sampled every few milliseconds while a request runs."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.peak_bytes, self._running = folder, 0, True
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._running = False
        self._thread.join()

    def _sample(self) -> None:
        while self._running:
            total = 0
            for root, _dirs, names in os.walk(self.folder):
                for name in names:
                    with contextlib.suppress(OSError):  # removed while walking
                        total += os.path.getsize(os.path.join(root, name))
            self.peak_bytes = max(self.peak_bytes, total)
            time.sleep(0.005)


@pytest.fixture
def temp_space(settings, tmp_path, monkeypatch):
    """Uploads spool and unpack under one folder of this test's own."""
    folder = tmp_path / "spool"
    folder.mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(folder)
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.django_db
def test_a_zip_bomb_of_zeros_is_refused_at_its_first_megabyte(owner_api, temp_space, media_files):
    zeros = bytes(125 * 1024**2)
    bomb = _zip(
        {f"f{index}_{channel}.png": zeros for index in range(2) for channel in ("red", "green", "blue", "yellow")}
    )
    del zeros
    assert len(bomb) < 2 * 1024**2
    with _TempSpace(temp_space) as space:
        response = owner_api.post("/api/jobs/", {"files": [SimpleUploadedFile("bomb.zip", bomb)]}, format="multipart")
    assert response.status_code == 400
    assert sorted(response.json()["fields"]) == ["f0", "f1"]  # each field named, as for any unreadable image
    assert space.peak_bytes < len(bomb) + 2 * 1024**2, space.peak_bytes
    assert (_files_under(temp_space), media_files(), Job.objects.count()) == ([], [], 0)


@pytest.mark.django_db
def test_archives_of_one_request_stop_unpacking_at_the_upload_limit(owner_api, settings, temp_space):
    settings.HPAWEB_MAX_UPLOAD_BYTES = limit = 24 * 1024**2
    fake_png = b"\x89PNG\r\n\x1a\n" + bytes(15 * 1024**2)
    archives = [SimpleUploadedFile(f"part{index}.zip", _zip({f"f{index}_green.png": fake_png})) for index in (1, 2)]
    with _TempSpace(temp_space) as space:
        response = owner_api.post("/api/jobs/", {"files": archives}, format="multipart")
    assert response.status_code == 400
    assert (
        "part2.zip was refused: its images unpack to more than the 24 MiB one upload may hold"
        in response.json()["detail"]
    )
    assert space.peak_bytes < 2 * limit
    assert _files_under(temp_space) == []


@pytest.mark.django_db
def test_a_request_over_the_upload_limit_is_refused_before_it_is_spooled(
    owner, owner_api, client, settings, temp_space
):
    settings.HPAWEB_MAX_UPLOAD_BYTES = 1024**2
    big = SimpleUploadedFile("f1_green.png", bytes(3 * 1024**2))
    with _TempSpace(temp_space) as space:
        response = owner_api.post("/api/jobs/", {"files": [big]}, format="multipart")
    sentence = "The upload is larger than the 1 MiB one request may hold; send the fields in several smaller uploads."
    assert (response.status_code, response.json()) == (413, {"detail": sentence})
    assert space.peak_bytes == 0
    client.force_login(owner)
    big.seek(0)
    page = client.post("/jobs/new/", {"files": [big]})
    assert (page.status_code, page.content.decode()) == (413, sentence)


_FULL_DISK_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import django
    django.setup()
    from django.test.utils import setup_test_environment
    setup_test_environment()
    from django.contrib.auth import get_user_model
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.test import Client
    from cells.models import Job
    client = Client()
    client.force_login(get_user_model().objects.get(username="owner"))
    files = [SimpleUploadedFile(path.name, path.read_bytes()) for path in sorted(Path(sys.argv[1]).iterdir())]
    response = client.post("/api/jobs/", {"files": files})
    media = Path(sys.argv[2])
    print(json.dumps({
        "status": response.status_code,
        "body": response.json(),
        "files": [str(p) for p in media.rglob("*") if p.is_file()],
        "jobs": Job.objects.count(),
    }))
    """
)


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_full_disk_while_storing_an_upload_answers_507_and_leaves_no_file(owner, tmp_path):
    """A real ENOSPC: the upload is stored into a 64 KiB tmpfs mounted in a mount namespace of its own."""
    channels = tmp_path / "channels"
    channels.mkdir()
    for channel, data in field_pngs(size_px=512).items():
        (channels / f"f1_{channel}.png").write_bytes(data)
    assert sum(path.stat().st_size for path in channels.iterdir()) > 64 * 1024
    media = tmp_path / "full-media"
    media.mkdir()
    script = tmp_path / "upload.py"
    script.write_text(_FULL_DISK_SCRIPT)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "hpaweb.settings.test",
        "DATABASE_URL": _test_database_url(),
        "MEDIA_ROOT": str(media),
        "PYTHONPATH": str(REPO_ROOT),
    }
    shell = f'mount -t tmpfs -o size=64k tmpfs "{media}" && exec "{sys.executable}" "{script}" "{channels}" "{media}"'
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", shell],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0 and "mount" in done.stderr and "permission" in done.stderr.lower():
        pytest.skip(f"no private tmpfs can be mounted here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr[-3000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome == {
        "status": 507,
        "body": {
            "detail": "The server's disk is full, so the upload could not be stored; nothing was kept. "
            "Try again later, or tell the administrator."
        },
        "files": [],
        "jobs": 0,
    }


# 5 and 7: small ones


@pytest.mark.django_db
def test_deleting_a_processed_job_leaves_no_empty_field_folders(
    owner_api, stored_field, ml_settings, isolated_media, django_capture_on_commit_callbacks
):
    from cells import processing

    ml_settings.ML_MODEL_PATH = ""
    field = stored_field(size_px=256)
    processing.field_process(field_id=field.pk)
    assert _files_under(isolated_media)
    with django_capture_on_commit_callbacks(execute=True):
        assert owner_api.delete(f"/api/jobs/{field.job_id}/").status_code == 204
    assert _files_under(isolated_media) == []
    assert _folders_under(isolated_media) == []


@pytest.mark.django_db
def test_a_page_post_with_an_unreadable_body_says_so(owner, client):
    client.force_login(owner)
    response = client.post("/jobs/new/", data=b"--xx\r\ngarbage", content_type="multipart/form-data; boundary=xx")
    assert response.status_code == 400
    assert "The upload could not be read: the request&#x27;s body is not valid multipart form data." in (
        response.content.decode()
    )


@pytest.mark.django_db
def test_a_file_name_of_5000_characters_gets_a_sentence(owner_api, channel_uploads):
    data = channel_uploads()["green"].read()
    response = owner_api.post(
        "/api/jobs/", {"files": [SimpleUploadedFile("a" * 5000 + "_green.png", data)]}, format="multipart"
    )
    assert response.status_code == 400
    assert f"The file name {'a' * 40}… is too long" in response.json()["detail"]


@pytest.mark.django_db
def test_a_three_page_tiff_is_said_to_have_three_pages(owner_api, tmp_path):
    planes = field_arrays(size_px=64)
    tifffile.imwrite(tmp_path / "f1.tif", [planes[c] for c in ("red", "green", "blue")], photometric="minisblack")
    upload = SimpleUploadedFile("f1.tif", (tmp_path / "f1.tif").read_bytes())
    response = owner_api.post("/api/jobs/", {"files": [upload]}, format="multipart")
    assert response.status_code == 400
    assert "but it has 3 pages (shape 3 x 64 x 64); save it with 4 pages" in response.json()["detail"]


# 6. make run stops cleanly


def _session_pids(session_id: int) -> list[int]:
    """The live (not zombie) processes of a session."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z" and os.getsid(int(entry.name)) == session_id:
                    pids.append(int(entry.name))
    return pids


@pytest.mark.worker
@pytest.mark.slow
@pytest.mark.parametrize("how", ["ctrl-c", "term-to-gunicorn"])
def test_make_run_stops_web_and_worker_promptly_and_cleanly(tmp_path, how):
    port = _free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "hpaweb.settings.test",
        "HPAWEB_VAR_DIR": str(tmp_path / "var"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "CELERY_QUEUE": f"make-run-{port}",
    }
    log = tmp_path / "make-run.log"
    with log.open("w") as out:
        make = subprocess.Popen(
            ["make", "-o", "setup", "run", f"PORT={port}"],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_for(
            lambda: " ready." in log.read_text() and "Listening at" in log.read_text(),
            timeout_s=120,
            what="up",
            log=log,
        )
        if how == "ctrl-c":
            os.killpg(make.pid, signal.SIGINT)  # what the terminal sends to the whole foreground group
        else:
            gunicorn = [
                pid for pid in _session_pids(make.pid) if b"gunicorn" in Path(f"/proc/{pid}/cmdline").read_bytes()
            ]
            os.kill(min(gunicorn), signal.SIGTERM)  # the master is the oldest, lowest pid
        stopped_at = time.monotonic()
        _wait_for(lambda: not _session_pids(make.pid), timeout_s=25, what="every process gone", log=log)
        assert time.monotonic() - stopped_at < 25
    finally:
        for pid in _session_pids(make.pid):
            os.kill(pid, signal.SIGKILL)
    text = log.read_text()
    assert "RecursionError" not in text and "Segmentation fault" not in text, text[-3000:]
