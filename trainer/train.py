"""The training loop: one function, read top to bottom.

``train(config, out_dir=...)`` loads and splits the data, trains the encoder with the chosen
loss on class-balanced P×K batches, evaluates on validation every epoch (keeping the best
weights), evaluates once on test, calibrates the verification threshold on the calibration
split, and exports ``<out_dir>/<model_id>/`` (encoder.pt + model.json + report).
"""

from __future__ import annotations

import copy
import logging
import math
import os
import platform
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from trainer import __version__
from trainer.card import ModelCard, Threshold
from trainer.config import TrainConfig, new_model_id
from trainer.data import (
    Dataset,
    PKSampler,
    Splits,
    augment,
    check_pairs_possible,
    load_dataset,
    split_dataset,
    two_views,
)
from trainer.export import write_model_dir
from trainer.losses import build_loss
from trainer.metrics import (
    calibrate_threshold,
    evaluate_embeddings,
    linear_probe_accuracy,
    verification_pairs,
    verification_roc,
)
from trainer.models import EmbeddingModel, Standardize, TrainingModel, build_model

log = logging.getLogger(__name__)

MONITOR = "knn_5_accuracy"  # the validation metric for early stopping and best-weights selection
CHECKPOINT_FILE = "checkpoint.pt"
PLACEHOLDER_SHA = "0" * 64


class TrainError(RuntimeError):
    """A training run cannot start or go on (bad device, data unusable for the loss...)."""


class Cancelled(Exception):  # noqa: N818 - it is a signal, not an error
    """Raised by a progress callback to stop training; nothing is exported."""


@dataclass
class Progress:
    """What the loop reports: per step during training, per epoch after evaluation."""

    phase: Literal["train", "epoch", "final"]
    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)


ProgressCallback = Callable[[Progress], None]


@dataclass
class TrainResult:
    model_dir: Path
    card: ModelCard
    history: list[dict[str, Any]]
    seconds: float


def resolve_device(requested: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without it is a clear error, not a fallback."""
    if requested == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if requested == "cuda":
        raise TrainError(
            "device 'cuda' was requested but CUDA is not available (torch.cuda.is_available() is False)"
        )
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float) -> float:
    """Linear warm-up, then cosine decay to 0 (computed, not stateful, so resuming is exact)."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def embed(encoder: EmbeddingModel, x: np.ndarray, device: torch.device, batch_size: int = 2048) -> np.ndarray:
    """Embed a whole array with the exported module's forward (eval mode)."""
    was_training = encoder.training
    encoder.eval()
    out = []
    for start in range(0, len(x), batch_size):
        batch = torch.from_numpy(x[start : start + batch_size]).to(device, non_blocking=True)
        out.append(encoder(batch).float().cpu())
    encoder.train(was_training)
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(out).numpy()


def random_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Plain shuffled batches for self-supervised ntxent, where labels play no part."""
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n, generator=gen).tolist()
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    return [b for b in batches if len(b) >= 2]


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _criterion(config: TrainConfig) -> nn.Module:
    if config.loss == "ce":
        return nn.CrossEntropyLoss()
    return build_loss(config.loss, **config.loss_params())


def _pairs(emb: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """All same/different pairs of a split (none when it has fewer than two samples)."""
    if len(y) < 2:
        return np.zeros(0), np.zeros(0, dtype=bool)
    return verification_pairs(emb, y, "cosine", seed=seed)


def _final_metrics(
    encoder: EmbeddingModel, splits: Splits, config: TrainConfig, device: torch.device
) -> tuple[dict[str, float], Threshold | None, dict[str, Any]]:
    """Test metrics (or validation when there is no test split) and the calibrated threshold."""
    final = splits.test if splits.test is not None and len(splits.test.y) else splits.val
    train_emb = embed(encoder, splits.train.x, device)
    eval_emb = embed(encoder, final.x, device)
    metrics = evaluate_embeddings(train_emb, splits.train.y, eval_emb, final.y, "cosine")
    metrics["linear_probe_accuracy"] = linear_probe_accuracy(
        train_emb, splits.train.y, eval_emb, final.y, seed=config.seed
    )
    plots: dict[str, Any] = {"eval_emb": eval_emb, "eval_y": final.y}
    dist, same = _pairs(eval_emb, final.y, config.seed)
    if same.any() and (~same).any():
        roc = verification_roc(dist, same)
        metrics["roc_auc"] = roc.auc
        metrics["eer"] = roc.eer
        for far, tar in roc.tar_at_far.items():
            metrics[f"tar_at_far_{far:g}"] = tar
        plots["roc"] = roc
    threshold = None
    calib = splits.calib if len(splits.calib.y) else splits.val
    c_dist, c_same = _pairs(embed(encoder, calib.x, device), calib.y, config.seed)
    if c_same.any() and (~c_same).any():
        t = calibrate_threshold(c_dist, c_same, config.target_far)
        threshold = Threshold(
            distance=t.threshold, target_far=config.target_far, far=t.far, tar=t.tar, n_pairs=t.n_pairs
        )
    metrics["eval_split_size"] = float(len(final.y))
    return metrics, threshold, plots


def train(
    config: TrainConfig,
    *,
    out_dir: str | Path,
    dataset: Dataset | None = None,
    data_root: Path | None = None,
    progress: ProgressCallback | None = None,
    resume: bool = False,
    log_every: int = 10,
) -> TrainResult:
    """Train, evaluate, calibrate and export one model; return where it was written."""
    started = time.perf_counter()
    seed_everything(config.seed)
    device = resolve_device(config.device)
    if device.type == "cuda" and config.encoder == "cnn":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels

    # --- data ---------------------------------------------------------------------------------
    ds = (
        dataset
        if dataset is not None
        else load_dataset(str(config.dataset), root=data_root, label_column=config.label_column)
    )
    if config.loss not in ("ce", "ntxent"):
        check_pairs_possible(ds)
    splits = split_dataset(
        ds,
        val_fraction=config.val_fraction,
        calib_fraction=config.calib_fraction,
        test_fraction=config.test_fraction,
        seed=config.seed,
    )
    train_set = splits.train
    if len(splits.val.y) == 0:
        raise TrainError("the validation split is empty; raise val_fraction or add data")
    kind = "image" if train_set.x.ndim == 4 else "vector"
    x_train = torch.from_numpy(train_set.x)
    y_train = torch.from_numpy(train_set.y)
    if device.type == "cuda":
        x_train = x_train.pin_memory()  # lets batch copies overlap with compute (non_blocking)

    # --- model, loss, optimiser -------------------------------------------------------------
    model: TrainingModel = build_model(
        encoder=config.encoder,
        input_shape=train_set.x.shape[1:],
        standardize=Standardize.fit(x_train),
        embedding_dim=config.embedding_dim,
        hidden=config.hidden,
        channels=config.channels,
        projection_dim=config.projection_dim,
        n_classes=ds.n_classes if config.loss == "ce" else None,
    ).to(device)
    criterion = _criterion(config).to(device)
    if config.optimizer == "adamw":
        optimizer: torch.optim.Optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
    else:
        optimizer = torch.optim.SGD(
            model.parameters(), lr=config.lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay
        )
    sampler = PKSampler(train_set.y, config.batch_size, config.samples_per_class, seed=config.seed)
    steps_per_epoch = (
        len(sampler)
        if config.loss != "ntxent"
        else len(random_batches(len(y_train), config.batch_size, 0, 0))
    )
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = int(config.warmup_epochs * steps_per_epoch)
    use_amp = config.amp and device.type == "cuda"

    # --- run directory, resume ----------------------------------------------------------------
    out_dir = Path(out_dir)
    model_id = config.name or new_model_id(config)
    run_dir = out_dir / ".runs" / model_id
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / CHECKPOINT_FILE
    start_epoch, global_step, bad_epochs = 0, 0, 0
    best_score, best_state = -math.inf, copy.deepcopy(model.encoder.state_dict())
    history: list[dict[str, Any]] = []
    if resume:
        if not ckpt_path.exists():
            raise TrainError(f"--resume: no checkpoint at {ckpt_path}")
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start_epoch, global_step = ckpt["epoch"], ckpt["global_step"]
        best_score, best_state, bad_epochs = ckpt["best_score"], ckpt["best_state"], ckpt["bad_epochs"]
        history = ckpt["history"]
        torch.set_rng_state(ckpt["rng"])
        log.info("resumed %s at epoch %d", model_id, start_epoch)

    # --- the loop -----------------------------------------------------------------------------
    for epoch in range(start_epoch, config.epochs):
        model.train()
        if config.loss == "ntxent":
            batches = random_batches(len(y_train), config.batch_size, config.seed, epoch)
        else:
            sampler.set_epoch(epoch)
            batches = list(sampler)
        epoch_loss, epoch_start = 0.0, time.perf_counter()
        for step, idx in enumerate(batches):
            index = torch.as_tensor(idx)
            xb = x_train[index].to(device, non_blocking=True)
            yb = y_train[index].to(device, non_blocking=True)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(global_step, total_steps, warmup_steps, config.lr)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                if config.loss == "ntxent":
                    views = two_views(xb, kind)  # (B, 2, ...): the only positives are a sample's two views
                    out = model(views.flatten(0, 1)).view(len(idx), 2, -1)
                else:
                    out = model(augment(xb, kind) if config.augment else xb)
                loss = criterion(out.float(), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            global_step += 1
            epoch_loss += float(loss.detach())
            if progress and (step % log_every == 0 or step == len(batches) - 1):
                progress(
                    Progress("train", epoch + 1, config.epochs, step + 1, len(batches), float(loss.detach()))
                )

        # Evaluate on validation: queries = validation, references = train (as the service will).
        val_metrics = evaluate_embeddings(
            embed(model.encoder, train_set.x, device),
            train_set.y,
            embed(model.encoder, splits.val.x, device),
            splits.val.y,
            "cosine",
        )
        record = {
            "epoch": epoch + 1,
            "loss": epoch_loss / max(1, len(batches)),
            "seconds": time.perf_counter() - epoch_start,
            "lr": optimizer.param_groups[0]["lr"],
            **{f"val_{k}": v for k, v in val_metrics.items()},
        }
        history.append(record)
        if val_metrics[MONITOR] > best_score:
            best_score, bad_epochs = val_metrics[MONITOR], 0
            best_state = copy.deepcopy(model.encoder.state_dict())
        else:
            bad_epochs += 1
        _save_checkpoint(
            ckpt_path,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "epoch": epoch + 1,
                "global_step": global_step,
                "best_score": best_score,
                "best_state": best_state,
                "bad_epochs": bad_epochs,
                "history": history,
                "rng": torch.get_rng_state(),
                "config": config.model_dump(mode="json"),
            },
        )
        if progress:
            progress(
                Progress(
                    "epoch", epoch + 1, config.epochs, len(batches), len(batches), record["loss"], record
                )
            )
        if config.patience and bad_epochs >= config.patience:
            log.info("early stop at epoch %d: no %s gain for %d epochs", epoch + 1, MONITOR, bad_epochs)
            break

    # --- final evaluation, calibration, export ------------------------------------------------
    model.encoder.load_state_dict(best_state)
    encoder = model.encoder.eval()
    metrics, threshold, plots = _final_metrics(encoder, splits, config, device)
    metrics["best_val_" + MONITOR] = best_score
    metrics["epochs_run"] = float(len(history))
    metrics["train_seconds"] = time.perf_counter() - started
    if progress:
        progress(Progress("final", len(history), config.epochs, 0, 0, None, metrics))

    card = ModelCard(
        model_id=model_id,
        input=ds.input_spec(),
        embedding_dim=config.embedding_dim,
        normalized=True,
        distance="cosine",
        loss={"name": config.loss, **({} if config.loss == "ce" else config.loss_params())},
        encoder={
            "name": config.encoder,
            "hidden": config.hidden,
            "channels": config.channels,
            "embedding_dim": config.embedding_dim,
            "projection_dim": config.projection_dim,
        },
        dataset=splits.card_info(),
        metrics=metrics,
        threshold=threshold,
        config=config.model_dump(mode="json"),
        encoder_sha256=PLACEHOLDER_SHA,
        versions={"trainer": __version__, "torch": torch.__version__, "python": platform.python_version()},
    )
    example = torch.from_numpy(splits.val.x[: min(8, len(splits.val.y))]).float()
    from trainer.report import render_report  # matplotlib is only needed at the very end

    extra = render_report(card, history, plots)
    model_dir = write_model_dir(encoder, card, out_dir / model_id, example, extra_files=extra)
    from trainer.card import read_card

    return TrainResult(model_dir, read_card(model_dir), history, time.perf_counter() - started)
