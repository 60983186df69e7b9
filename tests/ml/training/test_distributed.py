import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ml.training.data import class_balanced_weights, multi_hot
from ml.training.distributed import Distributed, DistributedBalancedSampler

ROOT = Path(__file__).resolve().parents[3]


def test_ranks_split_one_set_of_draws_between_them():
    weights = np.array([1.0, 2.0, 3.0, 4.0, 0.0])
    single = DistributedBalancedSampler(weights, num_samples=10, seed=3)
    ranks = [DistributedBalancedSampler(weights, num_samples=10, rank=r, world_size=2, seed=3) for r in (0, 1)]
    for sampler in (single, *ranks):
        sampler.set_epoch(4)
    assert [len(s) for s in ranks] == [5, 5]
    merged = [None] * 10
    merged[0::2], merged[1::2] = list(ranks[0]), list(ranks[1])
    assert merged == list(single) and 4 not in merged


def test_every_epoch_draws_anew_and_the_same_epoch_draws_the_same():
    sampler = DistributedBalancedSampler(np.ones(50), num_samples=20, seed=0)
    sampler.set_epoch(1)
    first = list(sampler)
    sampler.set_epoch(2)
    assert list(sampler) != first
    sampler.set_epoch(1)
    assert list(sampler) == first


def test_class_balance_holds_on_every_rank():
    targets = np.stack([multi_hot((0,))] * 900 + [multi_hot((11,))] * 100)  # a rare class at 10 %
    weights = class_balanced_weights(targets, power=1.0)
    for rank in (0, 1):
        sampler = DistributedBalancedSampler(weights, num_samples=20_000, rank=rank, world_size=2, seed=1)
        rare_share = np.mean(np.asarray(list(sampler)) >= 900)
        assert 0.47 < rare_share < 0.53  # inverse-frequency weights: both classes drawn alike


def test_without_torchrun_training_is_one_process():
    cluster = Distributed.start(torch.device("cpu"))
    assert (cluster.enabled, cluster.is_main, cluster.world_size) == (False, True, 1)
    assert cluster.broadcast({"a": 1}) == {"a": 1} and cluster.all_sum(2.5) == 2.5


def test_a_sampler_needs_a_row_to_draw():
    with pytest.raises(ValueError, match="at least one row with a positive weight"):
        DistributedBalancedSampler(np.zeros(3), num_samples=3)


@pytest.mark.slow
def test_torchrun_trains_with_two_cpu_processes_and_only_rank_zero_writes(tmp_path):
    from tests.ml.training.test_train_api import build_store

    build_store(tmp_path / "store", fields=8)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "ml",
               "train", "--store", str(tmp_path / "store"), "--out", str(tmp_path / "m.pt"), "--size", "32",
               "--epochs", "2", "--refine-rounds", "1", "--refine-epochs", "1", "--widths", "4", "4", "8", "8",
               "--batch-size", "8", "--device", "cpu", "--threads", "1", "--val-fraction", "0.25"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    finished = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    checkpoint = torch.load(tmp_path / "m.pt", weights_only=True)
    assert checkpoint["data"]["processes"] == 2 and len(checkpoint["metrics"]["history"]) == 2
    events = [json.loads(line)["event"] for line in (tmp_path / "m.run" / "log.jsonl").read_text().splitlines()]
    assert events == ["start", "epoch", "epoch", "refine", "epoch", "done"]  # one writer
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "m.run", "store"]
