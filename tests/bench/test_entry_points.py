"""Each benchmark runs as `python -m bench.<name>`; here only its command line is checked (benchmarks
report times, and timing has no place in the test suite)."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "module",
    [
        "bench",
        "bench.pipeline",
        "bench.postprocess",
        "bench.classifier",
        "bench.seg_quality",
        "bench.fingerprint",
        "bench.familiarity",
        "bench.models_memory",
        "bench.bioimageio",
        "bench.threads",
    ],
)
def test_benchmark_runs_as_a_module_and_describes_its_options(module):
    done = subprocess.run(
        [sys.executable, "-m", module, "--help"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    expected = "bench.pipeline" if module == "bench" else module
    assert done.stdout.startswith(f"usage: python -m {expected} ")
