"""Scale a dissection out over processes with `torch.distributed` (launch with `torchrun`).

    torchrun --standalone --nproc_per_node 4 --no-python gandissect dissect ...   # 4 processes, one machine
    torchrun --standalone --nproc_per_node 4 -m gandissect.cli dissect ...          # the same

`init_from_env(device)` reads the variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT), joins the process group once ("gloo" on CPU, "nccl" on CUDA, where it also makes
cuda:LOCAL_RANK the current device) and returns a `TorchDistributed`; launched as a plain process it
returns `SingleProcess`.

How ranks cooperate (see `dissection.Dissector`):
- the sample sets are cut into fixed batches of `batch_size`; batch b goes to rank b % world;
- rank 0 calibrates the activation histograms on batch 0 and `broadcast`s their ranges to every rank;
- at the end of each pass every rank calls `merge`: the statistics' state dicts travel over the process
  group with `all_gather_object`, and every rank merges them with the statistics' own `merge`, in rank
  order 0..world-1, so all ranks hold bit-identical merged statistics;
- rank 0 writes the results; each rank checkpoints to its own `checkpoint-rank{r}.safetensors`.

Any number of processes gives exactly the results of one process: batches (and so every forward pass)
are the same whatever the world size, the histogram and level statistics are integer counts (plus exact
minima and maxima), and top-k keeps the same samples whatever the order (ties go to the lower index).
All ranks must run the same code on the same kind of device, with the same number of threads per process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

import torch
import torch.distributed as dist

from gandissect.core.stats import Statistic, statistic_class


class Collective(Protocol):
    """How the shards of a run talk: `SingleProcess` for one process, `TorchDistributed` under torchrun."""

    rank: int
    world: int

    def broadcast(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...

    def merge(self, stats: dict[str, Statistic]) -> dict[str, Statistic]: ...

    def barrier(self) -> None: ...


class SingleProcess:
    """The collective of a plain process: broadcast and merge are identities."""

    rank = 0
    world = 1

    def broadcast(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return tensors

    def merge(self, stats: dict[str, Statistic]) -> dict[str, Statistic]:
        return stats

    def barrier(self) -> None:
        pass


def launched_distributed() -> bool:
    """Whether this process was started by torchrun (or alike) as one of several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def local_device(device: str | torch.device) -> torch.device:
    """This rank's device: for CUDA under torchrun, cuda:LOCAL_RANK; otherwise `device` unchanged."""
    device = torch.device(device)
    if device.type == "cuda" and launched_distributed():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def backend_for(device: str | torch.device) -> str:
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


class TorchDistributed:
    """The `dissection.Collective` of an initialised `torch.distributed` process group."""

    def __init__(self, device: str | torch.device = "cpu") -> None:
        if not dist.is_initialized():
            raise RuntimeError("torch.distributed is not initialised: call init_from_env() under torchrun")
        self.device = torch.device(device)
        self.rank = dist.get_rank()
        self.world = dist.get_world_size()

    def barrier(self) -> None:
        if self.device.type == "cuda":
            dist.barrier(device_ids=[self.device.index if self.device.index is not None
                                     else torch.cuda.current_device()])
        else:
            dist.barrier()

    def broadcast(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Rank 0's tensors on every rank (on this collective's device); other ranks pass `{}`."""
        header: list = [[(k, tuple(v.shape), v.dtype) for k, v in tensors.items()] if self.rank == 0 else None]
        dist.broadcast_object_list(header, src=0)
        out = {}
        for key, shape, dtype in header[0]:
            if self.rank == 0:
                buffer = tensors[key].detach().to(self.device).contiguous()
            else:
                buffer = torch.empty(shape, dtype=dtype, device=self.device)
            dist.broadcast(buffer, src=0)
            out[key] = buffer
        return out

    def merge(self, stats: dict[str, Statistic]) -> dict[str, Statistic]:
        """Every rank's statistics merged, returned on every rank; each statistic goes back to the device
        its local part was on. Statistics are gathered one at a time to bound memory."""
        names = [(name, type(stat).__name__) for name, stat in stats.items()]
        everyone: list = [None] * self.world
        dist.all_gather_object(everyone, names)
        for rank, theirs in enumerate(everyone):
            if theirs != names:
                raise RuntimeError(f"rank {rank} holds statistics {theirs}, rank {self.rank} holds {names}")
        merged: dict[str, Statistic] = {}
        for name, class_name in names:
            parts: list = [None] * self.world
            dist.all_gather_object(parts, stats[name].state_dict())
            cls = statistic_class(class_name)
            total = cls.from_state_dict(parts[0])
            for part in parts[1:]:
                total.merge(cls.from_state_dict(part))
            local = stats[name]
            merged[name] = total.to(getattr(local, local.fields[0]).device) if local.fields else total
        return merged

    def shutdown(self) -> None:
        shutdown()

    def __enter__(self) -> TorchDistributed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def init_from_env(device: str | torch.device = "cpu") -> Collective:
    """A `TorchDistributed` when launched by torchrun with several ranks, else `SingleProcess`.

    Initialises the default process group once (env:// rendezvous; "nccl" for CUDA devices, "gloo"
    otherwise) and, for CUDA, makes cuda:LOCAL_RANK the current device."""
    if not launched_distributed():
        return SingleProcess()
    device = local_device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend_for(device), init_method="env://")
    return TorchDistributed(device)


def shutdown(collective: Collective | None = None) -> None:
    """Leave the process group (if any); safe to call more than once, and a no-op for `SingleProcess`."""
    if collective is not None and not isinstance(collective, TorchDistributed):
        return
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def session(device: str | torch.device = "cpu") -> Iterator[Collective]:
    """`with session(device) as collective:` -- init_from_env, then shutdown on leaving."""
    collective = init_from_env(device)
    try:
        yield collective
    finally:
        shutdown(collective)
