"""Data-parallel training with PyTorch's own ``torch.distributed`` (launched by ``torchrun``).

Batch-wide losses (contrastive, triplet, npair, supcon, ntxent) must see every rank's embeddings
as candidates, so each rank all-gathers embeddings and labels before the loss. ``all_gather``
returns tensors without autograd history; putting the rank's own tensor back in its slot keeps
the gradient for the local slice. Every rank then computes the same global-batch loss L, and the
backward pass on rank r reaches only r's slice: ∂L/∂θ restricted to r's samples. DDP averages the
ranks' gradients (divides by W), so the loss is multiplied by W before ``backward`` — the optimizer
then sees Σ_r ∂L/∂θ|_r = ∂L/∂θ, exactly the gradient of single-process training on the
concatenated batch. Cross-entropy is a per-sample mean over equal-sized shards, for which DDP's
plain average is already exact, so it is neither gathered nor scaled.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """Where this process sits: rank ``rank`` of ``size`` (``size == 1`` is plain training)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def init_from_env(device: str) -> tuple[World, bool]:
    """Join the process group ``torchrun`` describes in the environment (if any).

    Returns the world and whether this call created the group (so the caller tears it down).
    NCCL on GPUs, gloo on CPUs.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World(), False
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    if dist.is_initialized():
        return world, False
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(world.local_rank)
    # Rank 0 alone evaluates and exports while the others wait at a barrier: allow it time.
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(hours=2))
    return world, True


def gather_with_grad(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """Concatenate every rank's ``tensor`` along dim 0 (rank order), keeping this rank's autograd graph."""
    if not world.distributed:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world.size)]
    dist.all_gather(parts, tensor.contiguous())
    parts[world.rank] = tensor
    return torch.cat(parts)


def broadcast_object(obj: Any, world: World) -> Any:
    """Rank 0's value of ``obj`` on every rank (a model id, a stop decision)."""
    if not world.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()
