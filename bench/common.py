"""What the benchmarks share: synthetic inputs, the machine's description, Django set up on a
throwaway database, results files, and the summaries and tables of repeated measurements."""

import json
import os
import platform
import socket
import statistics
import subprocess
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# The project's read-only reference data (real fields, the HPA segmenter's fixtures), beside the repository.
SHARED_DIR = REPO_ROOT.parent / "shared"
RESULTS_DIR = REPO_ROOT / "bench" / "results"
# Synthetic fields take seconds each to draw, so they are kept between runs (var/ is not tracked).
DEFAULT_DATA_DIR = REPO_ROOT / "var" / "bench"
DEFAULT_SEED = 2048


def synthetic_fields(
    *, count: int, size_px: int, seed: int = DEFAULT_SEED, data_dir: Path = DEFAULT_DATA_DIR
) -> list[dict[str, Path]]:
    """Channel files ({channel: path}) of `count` synthetic fields, drawn once and then reused.

    Field i depends only on (seed, i) and the size, so a folder drawn for more fields serves any
    smaller count.
    """
    from ml.io import find_fields
    from ml.synth import write_dataset

    folder = Path(data_dir) / f"synth-{size_px}px-s{seed}"
    fields = find_fields(folder) if folder.is_dir() else {}
    if len(fields) < count:
        print(
            f"Drawing {count} synthetic {size_px} px fields into {folder} (once; later runs reuse them) ...", flush=True
        )
        write_dataset(folder, n_images=count, seed=seed, size_px=size_px, bit_depth=8)
        fields = find_fields(folder)
    return [fields[field_id] for field_id in list(fields)[:count]]


def block_means(plane, factor: int):
    """float64 means of `factor` x `factor` blocks of a 2-D array (rows and columns beyond a whole block
    dropped): a field as a camera with pixels `factor` times larger would record it."""
    import numpy as np

    rows, cols = plane.shape[0] // factor * factor, plane.shape[1] // factor * factor
    shape = (rows // factor, factor, cols // factor, factor)
    return np.asarray(plane[:rows, :cols], dtype=np.float64).reshape(shape).mean(axis=(1, 3))


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median and maximum, the two numbers every table reports."""
    return {"median": statistics.median(values), "max": max(values)} if values else {"median": 0.0, "max": 0.0}


def machine_description() -> dict:
    """What the numbers were measured on, including how busy the machine was."""
    import numpy as np
    import PIL
    import skimage
    import torch

    description = {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "memory_gib": round(_meminfo_kib("MemTotal") / 1024**2, 1),
        "load_average_1_5_15": [round(load, 2) for load in os.getloadavg()],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__,
        "scikit_image": skimage.__version__,
        "pillow": PIL.__version__,
        "cuda_available": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
    }
    return description


def results_path(description: dict, date: str) -> Path:
    host = "".join(char if char.isalnum() or char in "-_." else "-" for char in description["host"]) or "host"
    return RESULTS_DIR / f"{date}-{host}.json"


def write_results(path: Path, *, machine: dict, sections: dict) -> None:
    """Merge `sections` into the day's results file, so separate runs (stages, system, memory) add up."""
    results = json.loads(path.read_text()) if path.exists() else {}
    results["machine"] = machine
    results.update(sections)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    temporary.replace(path)


def configure_django(var_dir: Path) -> None:
    """Set up Django in this process on a throwaway SQLite database and media folder under `var_dir`.

    The environment is set before `django.setup()`, so a worker process started from here with
    `os.environ` shares the database, media folder, embedded broker and queue.
    """
    import uuid

    import django
    from django.core.management import call_command

    var_dir.mkdir(parents=True, exist_ok=True)
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "hpaweb.settings.test",
            "HPAWEB_VAR_DIR": str(var_dir),
            "MEDIA_ROOT": str(var_dir / "media"),
            "DATABASE_URL": f"sqlite:///{var_dir / 'bench.sqlite3'}",
            "CELERY_BROKER_URL": "filesystem://",
            "CELERY_QUEUE": f"hpaweb-bench-{uuid.uuid4().hex[:12]}",
        }
    )
    django.setup()
    call_command("migrate", interactive=False, verbosity=0)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, align: str) -> str:
    """`align` holds one of "l" or "r" per column."""
    rule = ["---" if side == "l" else "---:" for side in align]
    lines = [header, rule, *rows]
    return "\n".join("| " + " | ".join(str(cell) for cell in line) + " |" for line in lines)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _meminfo_kib(key: str) -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
