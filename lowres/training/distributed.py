"""Multi-process training under torchrun: process group, device, DDP wrapper, resumable sampler.

One process needs no torchrun: ``setup_distributed`` then returns a world of one and every helper here
is a no-op, so the training loop has no ``if distributed`` branches of its own. Under
``torchrun --nproc_per_node N -m lowres.cli train ...`` it uses gloo on CPU and nccl on CUDA.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, DistributedSampler

from ..runtime import resolve_device
from ..errors import InputError

__all__ = ["DistEnv", "setup_distributed", "cleanup_distributed", "wrap_model", "ResumableSampler", "barrier",
           "all_reduce_sum", "all_gather_object", "broadcast_state", "node_part", "node_sync"]

HOST_WORK_TIMEOUT = timedelta(hours=6)  # crop cache builds: hours on full COCO, far beyond NCCL's 10 minutes
_NODE_GROUP: Any = None


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits: rank, world size, its device. Only ``is_main`` writes files."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # this process created the process group (and so destroys it)
    launched: bool = False  # started by torchrun: a process group (and DDP) even for a world of one

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 or self.launched


def setup_distributed(device: str = "auto") -> DistEnv:
    """Join the torchrun process group (env:// rendezvous) when started by torchrun or when WORLD_SIZE > 1, else a
    world of one with no group. ``torchrun --nproc_per_node 1`` therefore runs the distributed path (process group,
    DDP, gathers) on one device: how the nccl path is checked on a machine with one GPU."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    launched = "TORCHELASTIC_RUN_ID" in os.environ  # set by torchrun (torch.distributed.run) for every process
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    owns = False
    if (world_size > 1 or launched) and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
        owns = True
    return DistEnv(rank=rank, world_size=world_size, local_rank=local_rank, device=dev, owns_group=owns,
                   launched=launched and dist.is_initialized())


def cleanup_distributed(env: DistEnv) -> None:
    """Leave the process group if ``setup_distributed`` created it (after the last collective)."""
    global _NODE_GROUP
    if env.owns_group and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
        _NODE_GROUP = None


def wrap_model(model: nn.Module, env: DistEnv, *, sync_bn: bool = False) -> nn.Module:
    """DDP-wrap (optionally converting BatchNorm to SyncBatchNorm) when distributed; else unchanged."""
    if not env.distributed:
        return model
    if sync_bn and env.device.type != "cuda":
        raise InputError("model.sync_bn needs CUDA: torch's SyncBatchNorm only works with GPU modules")
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [env.device.index] if env.device.type == "cuda" else None
    # In training mode every parameter (aux head included) gets a gradient, so no find_unused_parameters; BN
    # buffers are synced from rank 0 at each forward (DDP's default).
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum a few Python numbers over ranks (epoch loss/accuracy counters)."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


@torch.no_grad()
def broadcast_state(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every rank.

    DDP keeps parameters equal, but BatchNorm statistics updated by the last forward of an epoch are each
    rank's own; broadcasting them at epoch ends leaves every rank with identical weights.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    for tensor in module.state_dict().values():
        dist.broadcast(tensor, src)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (a refusal rank 0 found, so no rank waits for it in a collective)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (RNG states for the checkpoint)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` whose position within an epoch is part of its state.

    The order of an epoch is a pure function of (seed, epoch), as in DistributedSampler; ``start`` skips the
    samples this rank has already consumed, so a run resumed mid-epoch sees exactly the remaining batches.
    With one process it is a seeded shuffle (or the identity order when ``shuffle=False``).
    """

    def __init__(self, dataset: Dataset, *, env: DistEnv, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False) -> None:
        super().__init__(dataset, num_replicas=env.world_size, rank=env.rank, shuffle=shuffle, seed=seed,
                         drop_last=drop_last)
        self.start = 0

    def set_position(self, epoch: int, start: int = 0) -> None:
        """Epoch to draw and number of this rank's samples already consumed in it."""
        self.set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.start:])

    def __len__(self) -> int:
        return self.num_samples - self.start

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "start": self.start, "seed": self.seed}


def node_part(env: DistEnv) -> tuple[int, int]:
    """``(local rank, processes on this node)``: this process's share of node-local host work."""
    if not env.distributed:
        return 0, 1
    return env.local_rank, int(os.environ.get("LOCAL_WORLD_SIZE", env.world_size))


def node_sync(env: DistEnv) -> Callable[[Any], Any]:
    """Barrier of this node's processes that hands every one local rank 0's value (a crop cache build's
    :data:`~detection_bridge.cache.Sync`).

    It runs over a gloo group of the node's ranks with a six-hour timeout, created once per process
    (every rank must reach the first call): a cache build takes minutes to hours, and waiting for it
    in an NCCL barrier would hit NCCL's ten-minute timeout and kill the waiting ranks.
    """
    global _NODE_GROUP
    if not (env.distributed and dist.is_available() and dist.is_initialized()):
        return lambda value: value
    if _NODE_GROUP is None:
        size = node_part(env)[1]
        _NODE_GROUP, _ = dist.new_subgroups(group_size=size, backend="gloo", timeout=HOST_WORK_TIMEOUT)
    group = _NODE_GROUP
    src = dist.get_global_rank(group, 0)

    def sync(value: Any) -> Any:
        box = [value]
        dist.broadcast_object_list(box, src=src, group=group)
        return box[0]

    return sync
