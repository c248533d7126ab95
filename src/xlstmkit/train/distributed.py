"""Several processes with PyTorch's own engine: `torchrun --nproc_per_node=N -m xlstmkit train ...`.

When torchrun sets WORLD_SIZE > 1 the process group is initialised (gloo on CPU, nccl on GPU) and the model is wrapped
in DistributedDataParallel, or sharded with FSDP (`fully_shard`) when asked. Rank 0 alone writes checkpoints, logs and
plots; every rank trains on its own rows of each global batch (see `xlstmkit.data.batches`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(preference: str = "auto", local_rank: int = 0) -> torch.device:
    """The device every command means by `--device`: "auto" is cuda:<local_rank> when CUDA is available, else cpu;
    "cpu", "cuda" (cuda:<local_rank>), "cuda:N" and "mps" are checked for availability (a one-line ValueError)."""
    from .config import check_device

    check_device(preference)
    if preference.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {preference}: CUDA is not available on this machine: use --device cpu "
                             f"(or auto)")
        count = torch.cuda.device_count()
        if ":" in preference:
            index = int(preference.split(":")[1])
            if index >= count:
                raise ValueError(f"--device {preference}: this machine has {count} CUDA device(s) (0..{count - 1})")
            return torch.device("cuda", index)
        return torch.device("cuda", local_rank % max(1, count))
    if preference == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError("--device mps: Apple's MPS is not available on this machine: use --device cpu (or auto)")
        return torch.device("mps")
    if preference == "auto" and torch.cuda.is_available():
        return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    return torch.device("cpu")


def init_distributed(device_preference: str = "auto") -> DistInfo:
    """Join the torchrun job if there is one (WORLD_SIZE > 1), else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_preference, local)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=device)


def wrap_model(model: nn.Module, info: DistInfo, fsdp: bool = False) -> nn.Module:
    """DDP (or FSDP with `fully_shard` on each block and the whole model) when running distributed."""
    if fsdp:
        if not info.distributed:
            return model  # one process: nothing to shard
        import warnings

        from torch.distributed.fsdp import fully_shard

        # FSDP2 warns when a block returns a view; the blocks never modify their outputs in place, so the warning
        # (once per block and call) is noise here; tests check FSDP's gradients against one process.
        warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
        for module in _shard_units(model):
            fully_shard(module)
        fully_shard(model)
        return model
    if not info.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[info.device.index] if info.device.type == "cuda" else None)


def _shard_units(model: nn.Module) -> list[nn.Module]:
    """The residual blocks of the model (each its own FSDP unit), found as the children of a ModuleList."""
    units = []
    for module in model.modules():
        if isinstance(module, nn.ModuleList):
            units.extend(module)
    return units


def auto_threads(world_size: int = 1) -> int:
    """CPU threads for each of `world_size` processes: all cores but one (left for the system and the other
    processes that share the machine), split among the processes, at least 1.

    Why not all cores: the small per-time-step operations of the recurrent layers synchronise the threads thousands
    of times per step, and when another program holds a core the waiting threads spin; on a shared 2-core machine one
    thread was measured 2x faster than two for the default model (and 100x+ for tiny ones).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, (cores - 1) // max(1, world_size))


def set_threads(requested: int | None, world_size: int = 1) -> int:
    """Set torch's intra-op threads (explicit request, else OMP_NUM_THREADS if set, else `auto_threads`); returns the
    previous count so the caller can restore it."""
    previous = torch.get_num_threads()
    if requested is not None and (not isinstance(requested, int) or isinstance(requested, bool) or requested < 1):
        raise ValueError(f"threads must be a positive integer, got {requested!r}")
    if requested is not None:
        torch.set_num_threads(requested)
    elif "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(auto_threads(world_size))
    return previous


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The mean of a tensor over all ranks (identity in one process)."""
    if not info.distributed:
        return value
    value = value.clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / info.world_size


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def broadcast_object(obj, info: DistInfo):
    """Rank 0's Python object on every rank."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shutdown(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()
