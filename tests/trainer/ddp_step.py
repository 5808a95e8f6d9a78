"""Run one training step per loss under torchrun (or alone) and save the loss and the gradients.

``torchrun --nproc_per_node=2 tests/trainer/ddp_step.py OUT`` gives each rank half of a fixed batch;
``python tests/trainer/ddp_step.py OUT`` (one process) takes the whole batch. test_distributed.py compares.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from trainer.config import TrainConfig
from trainer.distributed import init_from_env
from trainer.losses import build_criterion
from trainer.models import Standardize, build_model
from trainer.train import training_step

CASES = {
    "contrastive": {"loss": "contrastive"},
    "triplet-all": {"loss": "triplet", "mining": "all"},
    "triplet-hard": {"loss": "triplet", "mining": "hard"},
    "triplet-semihard": {"loss": "triplet", "mining": "semihard"},
    "triplet-soft": {"loss": "triplet", "mining": "hard", "soft": True},
    "npair": {"loss": "npair"},
    "supcon": {"loss": "supcon"},
    "ntxent": {"loss": "ntxent"},
    "ce": {"loss": "ce"},
}
BATCH, DIM, CLASSES = 16, 12, 4


def fixed_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(123)
    x = torch.randn(BATCH, DIM, generator=gen, dtype=torch.float64)
    views = torch.randn(BATCH, 2, DIM, generator=gen, dtype=torch.float64)
    y = torch.arange(BATCH) % CLASSES
    return x, views, y


def main(out: Path) -> None:
    world, owns = init_from_env("cpu")
    x, views, y = fixed_batch()
    share = slice(world.rank * BATCH // world.size, (world.rank + 1) * BATCH // world.size)
    results = {}
    for name, fields in CASES.items():
        config = TrainConfig(**fields, hidden=[], embedding_dim=8, projection_dim=6)
        torch.manual_seed(0)  # identical initial weights on every rank and in the single process
        model = build_model(
            encoder="mlp",
            input_shape=(DIM,),
            standardize=Standardize(torch.zeros(1, DIM), torch.ones(1, DIM)),
            embedding_dim=8,
            hidden=[],  # no BatchNorm: its per-rank statistics are the one thing DDP on CPU cannot share
            projection_dim=6,
            n_classes=CLASSES if name == "ce" else None,
        ).double()
        trained = DistributedDataParallel(model) if world.distributed else model
        inputs = views[share] if name == "ntxent" else x[share]
        loss = training_step(
            trained,
            build_criterion(config.loss, **config.loss_params()).double(),
            inputs,
            y[share],
            views=2 if name == "ntxent" else 1,
            world=world,
            use_amp=False,
        )
        results[name] = {
            "loss": float(loss.detach()),
            "grads": {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None},
        }
    if world.is_main:
        torch.save(results, out)
    if owns:
        torch.distributed.barrier()  # leave together: gloo aborts when a peer exits first
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
