"""Resident memory of a real Celery worker processing consecutive large fields.

One worker (`--concurrency=1`, as `make run` starts it) runs on the embedded broker and a
throwaway SQLite database; `count` fields are queued at once, cycling over a few distinct
synthetic fields. The process that does the work is the worker's pool process: its resident
memory is read after every finished field, and its peak is the kernel's high-water mark
(VmHWM). Growth is judged after a warm-up of WARM_UP_FIELDS fields, by the straight-line slope
of resident memory per field.
"""

import datetime
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.common import REPO_ROOT, configure_django, markdown_table

WARM_UP_FIELDS = 10
STARTUP_TIMEOUT_S = 180.0
FIELD_TIMEOUT_S = 600.0
SAMPLE_INTERVAL_S = 0.2


def run(field_files: Sequence[dict[str, Path]], *, count: int, var_dir: Path, command: str) -> dict:
    from django.apps import apps

    if not apps.ready:
        configure_django(var_dir)
    from django.conf import settings

    from cells.intake import fields_enqueue
    from cells.models import Field

    field_ids = _create_fields(field_files, count=count, media_root=Path(settings.MEDIA_ROOT))
    log_path = Path(settings.VAR_DIR) / "memory-worker.log"
    print(f"Processing {count} {_side_px(field_files[0])} px fields in one worker, watching its memory ...", flush=True)
    command_line = [sys.executable, "-m", "celery", "-A", "hpaweb", "worker", "--loglevel=INFO", "--concurrency=1",
                    "-Q", ",".join([settings.CELERY_TASK_DEFAULT_QUEUE, *settings.HPAWEB_QUEUES.values()]), "--hostname", f"bench-memory-{os.getpid()}@%h"]  # fmt: skip
    with log_path.open("w") as log:
        worker = subprocess.Popen(
            command_line, cwd=REPO_ROOT, env=os.environ.copy(), stdout=log, stderr=subprocess.STDOUT
        )
    try:
        pool_pid = _wait_for_pool_process(worker.pid, log_path)
        idle_rss_mib = _status_mib(pool_pid, "VmRSS")
        started = time.perf_counter()
        fields_enqueue(field_ids=field_ids)
        rss_after_mib: list[float] = []
        deadline = time.monotonic() + FIELD_TIMEOUT_S
        while len(rss_after_mib) < count:
            finished = Field.objects.filter(pk__in=field_ids, status__in=Field.FINISHED).count()
            if finished > len(rss_after_mib):
                rss_after_mib += [_status_mib(pool_pid, "VmRSS")] * (finished - len(rss_after_mib))
                deadline = time.monotonic() + FIELD_TIMEOUT_S
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"The worker stopped or stalled after {finished} fields; see {log_path}.")
            time.sleep(SAMPLE_INTERVAL_S)
        seconds = time.perf_counter() - started
        peak_mib = _status_mib(pool_pid, "VmHWM")
        main_rss_mib = _status_mib(worker.pid, "VmRSS")
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    failed = list(
        Field.objects.filter(pk__in=field_ids).exclude(status=Field.Status.DONE).values_list("error", flat=True)
    )
    if failed:
        raise RuntimeError(f"{len(failed)} fields failed, first: {failed[0]}")
    steady = rss_after_mib[min(WARM_UP_FIELDS, count - 1) :]
    slope = float(np.polyfit(np.arange(len(steady)), steady, 1)[0]) if len(steady) > 1 else 0.0
    return {
        "measured_at": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": command,
        "fields": count,
        "distinct_fields": len(field_files),
        "size_px": _side_px(field_files[0]),
        "seconds": seconds,
        "pool_process_idle_rss_mib": idle_rss_mib,
        "pool_process_peak_rss_mib": peak_mib,
        "main_process_rss_mib": main_rss_mib,
        "rss_after_each_field_mib": rss_after_mib,
        "growth_after_warm_up_mib": steady[-1] - steady[0],
        "growth_slope_mib_per_field": slope,
    }


def report(section: dict) -> str:
    rss = section["rss_after_each_field_mib"]
    warm_up = min(WARM_UP_FIELDS, section["fields"] - 1)
    rows = [
        ["pool process, idle (models not loaded yet)", f"{section['pool_process_idle_rss_mib']:.0f}"],
        ["pool process, peak (VmHWM)", f"{section['pool_process_peak_rss_mib']:.0f}"],
        ["pool process, after field 1", f"{rss[0]:.0f}"],
        [f"pool process, after field {warm_up + 1}", f"{rss[warm_up]:.0f}"],
        [f"pool process, after field {section['fields']}", f"{rss[-1]:.0f}"],
        ["worker main process", f"{section['main_process_rss_mib']:.0f}"],
    ]
    return "\n".join([
        "## Memory: one Celery worker", "",
        f"{section['fields']} consecutive {section['size_px']} px fields ({section['distinct_fields']} distinct, cycled) "
        f"in {section['seconds']:.0f} s.", "",
        markdown_table(["resident memory", "MiB"], rows, align="lr"), "",
        f"Growth from field {warm_up + 1} to {section['fields']}: {section['growth_after_warm_up_mib']:+.1f} MiB "
        f"(slope {section['growth_slope_mib_per_field']:+.2f} MiB per field).", "",
    ])  # fmt: skip


def _create_fields(field_files: Sequence[dict[str, Path]], *, count: int, media_root: Path) -> list[int]:
    """`count` queued fields whose channel files are copies of `field_files`, cycled."""
    from django.contrib.auth import get_user_model
    from PIL import Image

    from cells.models import Field, Job

    inputs = media_root / "bench-inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    stored, shapes = [], []
    for index, channel_files in enumerate(field_files):
        names = {}
        for channel, path in channel_files.items():
            shutil.copyfile(path, inputs / f"{index}_{channel}.png")
            names[channel] = f"bench-inputs/{index}_{channel}.png"
        stored.append(names)
        with Image.open(channel_files["green"]) as image:  # the header is enough
            shapes.append(((image.height, image.width), 16 if image.mode.startswith("I") else 8))
    owner, _ = get_user_model().objects.get_or_create(username="bench")
    job = Job.objects.create(owner=owner, name="memory", segmentation_backend="classical")
    fields = []
    for index in range(count):
        (height, width), bit_depth = shapes[index % len(stored)]
        fields.append(Field(job=job, name=f"m{index:03d}", width=width, height=height, bit_depth=bit_depth,
                            **stored[index % len(stored)]))  # fmt: skip
    return [field.pk for field in Field.objects.bulk_create(fields)]


def _wait_for_pool_process(main_pid: int, log_path: Path) -> int:
    """The pid of the worker's (only) pool process, once the worker says it is ready."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if " ready." in log_path.read_text():
            children = _children(main_pid)
            if len(children) == 1:
                return children[0]
        time.sleep(0.2)
    raise RuntimeError(f"The Celery worker did not start; see {log_path}.")


def _children(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def _status_mib(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/{pid}/status has no {key}.")


def _side_px(channel_files: dict[str, Path]) -> int:
    from PIL import Image

    with Image.open(channel_files["green"]) as image:
        return max(image.size)
