"""The measurement and classical-baseline benchmarks: their command lines, and a tiny run of each table."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def _run(*arguments: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *arguments], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize("module", ["bench.measure", "bench.classical"])
def test_benchmark_describes_its_options(module):
    done = _run(module, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: python -m {module} ")


@pytest.mark.slow
def test_the_classical_comparison_prints_the_seeds_columns_for_every_method():
    done = _run("bench.classical", "--fields", "3", "--size", "512", "--folds", "2", timeout=900)
    assert done.returncode == 0, done.stderr
    header = (
        "| method | accuracy (2-fold CV, single-label cells) | mAP (multi-label cells) | features | "
        "extraction s/cell | classification s/cell |"
    )
    assert header in done.stdout
    for method in ("LBP (P=16, R=2, uniform)", "14 Haralick coefficients", "wavelet scattering", "all features", "CNN"):
        assert f"| {method}" in done.stdout or method in done.stdout
    assert "| LBP (P=16, R=2) | 87.5 ± 1.3 % | 243 | 0.34 | 4.6e-5 |" in done.stdout
