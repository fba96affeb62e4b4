"""Sharding checkpoints over torchrun ranks: each rank evaluates every size-th checkpoint, rank 0 gathers.

    torchrun --nproc-per-node N -m postmortem report RUN ...

torchrun sets RANK and WORLD_SIZE (and the rendezvous address); without them this is one process and
nothing here imports torch.distributed. Results travel as pickled per-checkpoint outcomes over a gloo group
(also on GPU machines: the records are small numpy arrays, and gloo carries Python objects between hosts).
"""
from __future__ import annotations

import os
from typing import Any

__all__ = ["world", "is_main_rank", "shard", "gather_to_main"]


def world() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) for a plain process."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def is_main_rank() -> bool:
    return world()[0] == 0


def shard(items: list, rank: int, size: int) -> list:
    """This rank's share: every size-th item starting at rank (balanced, order-preserving)."""
    return items[rank::size]


def gather_to_main(outcomes: list[Any], rank: int, size: int) -> list[Any] | None:
    """All ranks' outcomes on rank 0 in the original item order; None on the other ranks."""
    import torch.distributed as dist

    initialised_here = not dist.is_initialized()
    if initialised_here:
        dist.init_process_group(backend="gloo")
    try:
        gathered: list[list[Any]] | None = [None] * size if rank == 0 else None
        dist.gather_object(outcomes, gathered, dst=0)
    finally:
        if initialised_here:
            dist.destroy_process_group()
    if rank != 0:
        return None
    merged = []
    for position in range(max(len(part) for part in gathered)):   # undo the round-robin shard
        for part in gathered:
            if position < len(part):
                merged.append(part[position])
    return merged
