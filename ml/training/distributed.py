"""Training on several processes with PyTorch DistributedDataParallel (`torchrun ... -m ml train`).

`Distributed.start(device)` reads what torchrun sets (`WORLD_SIZE`, `RANK`, `LOCAL_RANK`,
`MASTER_ADDR`, `MASTER_PORT`) and joins the group: NCCL on GPUs (each process on
`cuda:LOCAL_RANK`), gloo on CPUs. Without torchrun it is one process and every call is a no-op.
Rank 0 alone prepares data, evaluates and writes; the others wait at `barrier` and receive its
decisions through `broadcast`.

`DistributedBalancedSampler` draws class-balanced samples the same way on every rank (one
generator seeded by seed and epoch) and gives each rank every `world_size`-th draw, so every rank
sees a class-balanced share and together they see one balanced epoch.
"""

import math
import os
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

# Rank 0 may prepare a large store while the others wait; the default 30 min would end them.
PROCESS_GROUP_TIMEOUT = timedelta(hours=12)


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def start(cls, device: torch.device) -> "Distributed":
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls(device=device)
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", timeout=PROCESS_GROUP_TIMEOUT)
        return cls(rank=rank, world_size=world_size, local_rank=local_rank, device=device)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast(self, value):
        """Rank 0's `value` on every rank (any picklable object)."""
        if not self.enabled:
            return value
        holder = [value if self.is_main else None]
        dist.broadcast_object_list(holder, src=0, device=self.device if self.device.type == "cuda" else None)
        return holder[0]

    def sync_module(self, module: torch.nn.Module) -> None:
        """Every rank's parameters and buffers become rank 0's."""
        if self.enabled:
            for tensor in module.state_dict().values():
                dist.broadcast(tensor, src=0)

    def all_sum(self, value: float) -> float:
        if not self.enabled:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return float(tensor.item())

    def stop(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


class DistributedBalancedSampler(Sampler[int]):
    """`num_samples` draws (with replacement) of rows with probability proportional to `weights`,
    the same draws on every rank for a given epoch, of which rank r takes draws r, r + W, ...
    (`set_epoch` before each epoch, as with torch's DistributedSampler)."""

    def __init__(self, weights: np.ndarray, *, num_samples: int, rank: int = 0, world_size: int = 1, seed: int = 0):
        if len(weights) == 0 or not np.any(np.asarray(weights) > 0):
            raise ValueError("Balanced sampling needs at least one row with a positive weight.")
        self.weights = torch.as_tensor(np.asarray(weights), dtype=torch.double)
        self.num_samples = num_samples
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.epoch = 0
        self.per_rank = math.ceil(num_samples / world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def draws(self) -> torch.Tensor:
        """Every rank's draws of this epoch, in order (rank r's are [r::world_size])."""
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        total = self.per_rank * self.world_size  # padded so that every rank takes as many
        return torch.multinomial(self.weights, total, replacement=True, generator=generator)

    def __iter__(self):
        return iter(self.draws()[self.rank :: self.world_size].tolist())

    def __len__(self) -> int:
        return self.per_rank
