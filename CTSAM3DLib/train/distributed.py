"""Distributed data-parallel helpers for ``torchrun`` (NCCL on GPU, gloo on CPU).

The trainer is started once per process by ``torchrun``, which sets ``RANK`` (global rank),
``LOCAL_RANK`` (rank on this node), ``WORLD_SIZE`` and ``LOCAL_WORLD_SIZE``; without them it
runs as a single process. Only global rank 0 logs, writes metrics and saves checkpoints.

Single node, 8 GPUs::

    torchrun --standalone --nproc_per_node=8 -m CTSAM3DLib.cli.train \\
        --config configs/paper_8gpu.yaml --data /data/TotalSegmentator --output runs/paper --device cuda

Two nodes with 8 GPUs each (run on every node, same rendezvous endpoint; ``--node_rank`` is
optional with the c10d rendezvous)::

    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_id=ctsam3d \\
        --rdzv_endpoint=node0.example.org:29500 -m CTSAM3DLib.cli.train \\
        --config configs/paper_8gpu.yaml --data /data/TotalSegmentator --output /shared/runs/paper --device cuda

``$(which ctsam3d) train ...`` works in place of ``-m CTSAM3DLib.cli.train ...``. The output
and cache folders must be on a file system all nodes share (rank 0 writes, and every rank
reads the preprocessing cache). Two CPU processes (as in CI)::

    python -m torch.distributed.run --standalone --nproc_per_node=2 -m CTSAM3DLib.cli.train \\
        --config configs/compact_cpu.yaml --data DIR --output RUN --max-steps 3
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

# Collective timeout: long enough for rank 0..N to preprocess a large dataset between barriers.
_TIMEOUT = datetime.timedelta(hours=3)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job.

    Attributes:
        rank: global rank (0 .. world_size - 1).
        local_rank: rank on this node (selects the GPU).
        world_size: number of processes in the job.
        local_world_size: number of processes on this node (shares the CPU cores).
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Global rank 0: the process that logs and saves."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """More than one process."""
        return self.world_size > 1


def env_info() -> DistInfo:
    """Read ``RANK`` / ``LOCAL_RANK`` / ``WORLD_SIZE`` / ``LOCAL_WORLD_SIZE`` set by torchrun (defaults: 1 process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return DistInfo(rank=int(os.environ.get("RANK", "0")), local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                    world_size=world, local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", str(world))))


def init_distributed(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the torchrun job (if any) and pick this process's device.

    Args:
        device: ``cpu`` or ``cuda``; under DDP a CUDA device becomes ``cuda:LOCAL_RANK``.

    Returns:
        ``(info, device)``.
    """
    info = env_info()
    if device.type == "cuda" and info.enabled:
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"backend": backend, "timeout": _TIMEOUT}
        if backend == "nccl":
            kwargs["device_id"] = device
        dist.init_process_group(**kwargs)
    return info, device


def barrier(info: DistInfo) -> None:
    """Wait for all processes (no-op for one process)."""
    if info.enabled and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of a tensor over processes (a copy; unchanged for one process)."""
    out = values.detach().clone()
    if info.enabled and dist.is_initialized():
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        out /= info.world_size
    return out


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every process's ``obj``, indexed by rank (``[obj]`` for one process)."""
    if not (info.enabled and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every process."""
    if not (info.enabled and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def cleanup(info: DistInfo) -> None:
    """Leave the process group."""
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
