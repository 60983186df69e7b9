"""`python -m ml train` killed with SIGKILL mid-run, then `--resume`: it finishes with the weights of an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[3]


def command(store: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ml", "train", "--store", str(store), "--out", str(out), "--size", "32",
            "--epochs", "6", "--refine-rounds", "1", "--refine-epochs", "2", "--widths", "4", "4", "8", "8",
            "--batch-size", "4", "--device", "cpu", "--threads", "1", "--val-fraction", "0.25", *extra]  # fmt: skip


@pytest.mark.slow
def test_a_killed_training_resumes_and_ends_as_an_uninterrupted_one(tmp_path):
    from tests.ml.training.test_train_api import build_store

    build_store(tmp_path / "store", fields=8)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        command(tmp_path / "store", tmp_path / "whole.pt"), cwd=ROOT, env=env, check=True, capture_output=True
    )
    log = tmp_path / "cut.run" / "log.jsonl"
    process = subprocess.Popen(
        command(tmp_path / "store", tmp_path / "cut.pt"), cwd=ROOT, env=env, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (log.is_file() and log.read_text().count('"event": "epoch"') >= 2):
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "cut.pt").exists()
    finished = subprocess.run(
        command(tmp_path / "store", tmp_path / "cut.pt", "--resume"), cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "Resuming round " in finished.stderr
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["event"] for e in events].count("resume") == 1 and events[-1]["event"] == "done"
    epochs = [(e["stage"], e["epoch"]) for e in events if e["event"] == "epoch"]
    assert epochs[-1] == ("round 1", 2) and len(set(epochs)) == 8  # every epoch ran, none lost after the resume
    a = torch.load(tmp_path / "whole.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut.pt", weights_only=True)["model"]
    assert all(torch.equal(a[key], b[key]) for key in a)
