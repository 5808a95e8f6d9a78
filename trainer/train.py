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
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from trainer import __version__
from trainer.card import ModelCard, OperatingPoint, Threshold, read_card
from trainer.config import TrainConfig, check_encoder_fits, new_model_id
from trainer.data import (
    Dataset,
    PKSampler,
    Splits,
    align_test_set,
    augment,
    check_pairs_possible,
    load_dataset,
    load_test_dataset,
    split_dataset,
    two_views,
)
from trainer.distributed import World, barrier, broadcast_object, gather_with_grad, init_from_env
from trainer.export import write_model_dir
from trainer.losses import Criterion, build_criterion
from trainer.metrics import (
    calibrate_threshold,
    evaluate_embeddings,
    linear_probe_accuracy,
    operating_point,
    verification_pairs,
    verification_roc,
)
from trainer.models import EmbeddingModel, Standardize, TrainingModel, build_model

log = logging.getLogger(__name__)

# The validation metric for early stopping and for choosing the exported epoch. MAP@R, not kNN-5:
# kNN-5 saturates within a few epochs (0.982 from epoch 3 of a MNIST-5k CNN run that kept improving),
# so it stopped runs whose retrieval and verification were still getting better. MAP@R rewards
# ranking *all* same-class items first, which is what search and a verification threshold need.
MONITOR = "map_at_r"
FALLBACK_MONITOR = "knn_5_accuracy"  # when no validation label occurs twice, MAP@R is undefined
# Per-epoch kNN uses at most this many training items as references (a fixed random sample): embedding
# all 48,000 of Fashion-MNIST's every epoch was a fifth of a CNN epoch. The monitor (MAP@R) needs only
# validation; the final test metrics use every training item.
EPOCH_REFERENCES = 10_000
# augment=None (auto) augments below this many training items per class. Augmentation is a regulariser:
# with 300 MNIST digits per class it helped (CNN test MAP@R 0.961 vs 0.958, MLP 0.909 vs 0.878); with
# 4,800 Fashion-MNIST items per class it hurt (test kNN-5 of the MLP 0.875 vs 0.893, the CNN 0.912 vs 0.922).
AUGMENT_BELOW_PER_CLASS = 1_000
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
    splits: Splits  # the train / validation / calibration / test split it used (for further evaluation)


def resolve_device(requested: str, local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without it is a clear error, not a fallback."""
    if requested == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank)
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
def embed(
    encoder: EmbeddingModel,
    x: np.ndarray,
    device: torch.device,
    batch_size: int = 2048,
    channels_last: bool = False,
) -> np.ndarray:
    """Embed a whole array with the exported module's forward (eval mode)."""
    was_training = encoder.training
    encoder.eval()
    out = []
    for start in range(0, len(x), batch_size):
        batch = torch.from_numpy(x[start : start + batch_size]).to(device, non_blocking=True)
        if channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        out.append(encoder(batch).float().cpu())
    encoder.train(was_training)
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(out).numpy()


def reference_sample(n: int, cap: int, seed: int) -> np.ndarray:
    """Sorted indices of at most ``cap`` of ``n`` items, drawn from ``seed`` (all of them when n <= cap)."""
    if n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=cap, replace=False))


def wants_augment(config: TrainConfig, n_train: int, n_classes: int) -> bool:
    """``config.augment``, or when unset, whether the training split is small enough to benefit."""
    if config.augment is not None:
        return config.augment
    return n_train < AUGMENT_BELOW_PER_CLASS * max(1, n_classes)


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


def loss_card(config: TrainConfig, criterion: Criterion) -> dict[str, Any]:
    """The card's ``loss``: its name and every parameter as the built loss resolved it.

    Read back from the module, so a default (supcon's temperature, say) is recorded as used.
    """
    return {"name": config.loss, **criterion.params}


def model_dir_taken(model_dir: Path, run_dir: Path, resume: bool) -> TrainError:
    """The refusal of a run whose model directory exists: raised before training, not at export."""
    checkpoint = run_dir / CHECKPOINT_FILE
    then = f" (--resume then continues from {checkpoint})" if resume and checkpoint.exists() else ""
    return TrainError(
        f"model directory {model_dir} already exists: train under another --name, "
        f"or delete that directory first{then}"
    )


def _pairs(emb: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """All same/different pairs of a split (none when it has fewer than two samples)."""
    if len(y) < 2:
        return np.zeros(0), np.zeros(0, dtype=bool)
    return verification_pairs(emb, y, "cosine", seed=seed)


def _final_metrics(
    encoder: EmbeddingModel, splits: Splits, config: TrainConfig, device: torch.device, channels_last: bool
) -> tuple[dict[str, float], Threshold | None, dict[str, Any]]:
    """Test metrics (or validation when there is no test split), the calibrated threshold and what it
    achieves on the test pairs."""
    has_test = splits.test is not None and len(splits.test.y) > 0
    final = splits.test if has_test and splits.test is not None else splits.val
    final_name = "test" if has_test else "validation"
    train_emb = embed(encoder, splits.train.x, device, channels_last=channels_last)
    eval_emb = embed(encoder, final.x, device, channels_last=channels_last)
    metrics = evaluate_embeddings(train_emb, splits.train.y, eval_emb, final.y, "cosine")
    metrics["linear_probe_accuracy"] = linear_probe_accuracy(
        train_emb, splits.train.y, eval_emb, final.y, seed=config.seed
    )
    plots: dict[str, Any] = {"eval_emb": eval_emb, "eval_y": final.y, "split": final_name}
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
    c_dist, c_same = _pairs(
        embed(encoder, calib.x, device, channels_last=channels_last), calib.y, config.seed
    )
    if c_same.any() and (~c_same).any():
        t = calibrate_threshold(c_dist, c_same, config.target_far)
        achieved = None
        if "roc" in plots:  # what the threshold does on pairs it was not chosen on
            op = operating_point(dist, same, t.threshold)
            achieved = OperatingPoint(
                split=final_name, far=op.far, tar=op.tar, n_same=op.n_same, n_different=op.n_different
            )
            plots["operating_point"] = op
        threshold = Threshold(
            distance=t.threshold,
            target_far=config.target_far,
            far=t.far,
            tar=t.tar,
            n_pairs=t.n_pairs,
            n_same=t.n_same,
            n_different=t.n_different,
            test=achieved,
        )
    metrics["eval_split_size"] = float(len(final.y))
    return metrics, threshold, plots


def shard_batches(batches: list[list[int]], world: World) -> list[list[int]]:
    """This rank's share of an epoch's batches (ntxent's plain batches; PKSampler shards itself).

    Every rank gets the same number of equal-sized batches, as ``all_gather`` needs.
    """
    if not world.distributed:
        return batches
    full = [b for b in batches if len(b) == len(batches[0])]
    usable = len(full) - len(full) % world.size
    return full[world.rank : usable : world.size]


def training_step(
    model: nn.Module,
    criterion: Criterion,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    views: int,
    world: World,
    use_amp: bool,
) -> torch.Tensor:
    """Forward, loss over the global batch, and backward; returns the (unscaled) loss.

    ``inputs`` is ``(B, ...)``, or ``(B, views, ...)`` for ntxent. Batch-wide losses gather all
    ranks' embeddings and scale by the world size (see ``trainer.distributed``), so the gradients
    DDP averages equal those of one process on the concatenated batch.
    """
    with torch.autocast(device_type=inputs.device.type, dtype=torch.bfloat16, enabled=use_amp):
        out = model(inputs.flatten(0, 1) if views > 1 else inputs).float()
    if views > 1:
        out = out.view(len(inputs), views, -1)
    if not criterion.batch_wide:
        loss = criterion(out, labels)  # a per-sample mean: DDP's average over equal shards is exact
        loss.backward()
        if world.distributed:  # report the global-batch mean, as the other losses do
            loss = loss.detach().clone()
            dist.all_reduce(loss)
            loss /= world.size
        return loss
    loss = criterion(gather_with_grad(out, world), gather_with_grad(labels, world))
    (loss * world.size).backward()
    return loss


def train(
    config: TrainConfig,
    *,
    out_dir: str | Path,
    dataset: Dataset | None = None,
    data_root: Path | None = None,
    progress: ProgressCallback | None = None,
    resume: bool = False,
    log_every: int = 10,
    run_dir: Path | None = None,
) -> TrainResult | None:
    """Train, evaluate, calibrate and export one model; return where it was written.

    Under ``torchrun`` every rank trains its shard and only rank 0 evaluates, checkpoints,
    reports progress and exports; the other ranks return None. Checkpoints go to ``run_dir``
    (default ``<out_dir>/.runs/<model_id>``), which is what ``resume`` continues from. A run whose
    model directory already exists is refused (``TrainError``) before it loads data or trains.
    """
    started = time.perf_counter()
    world, owns_group = init_from_env(config.device)
    try:
        result = _train(
            config, Path(out_dir), dataset, data_root, progress, resume, log_every, run_dir, world, started
        )
        barrier(world)  # the other ranks wait for rank 0's export: gloo aborts if a peer leaves early
        return result
    finally:
        if owns_group:
            dist.destroy_process_group()


def _train(
    config: TrainConfig,
    out_dir: Path,
    dataset: Dataset | None,
    data_root: Path | None,
    progress: ProgressCallback | None,
    resume: bool,
    log_every: int,
    run_dir: Path | None,
    world: World,
    started: float,
) -> TrainResult | None:
    seed_everything(config.seed)  # the same seed on every rank: identical initial weights
    device = resolve_device(config.device, world.local_rank)
    if device.type == "cuda" and config.encoder == "cnn":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels
    report = progress if world.is_main else None

    # --- model id: refuse a taken model directory before any work -----------------------------
    model_id = broadcast_object(config.name or new_model_id(config), world)
    run_dir = run_dir or out_dir / ".runs" / model_id
    if broadcast_object((out_dir / model_id).exists(), world):  # rank 0's file system decides for all
        raise model_dir_taken(out_dir / model_id, run_dir, resume)

    # --- data ---------------------------------------------------------------------------------
    ds = (
        dataset
        if dataset is not None
        else load_dataset(str(config.dataset), root=data_root, label_column=config.label_column)
    )
    try:
        check_encoder_fits(config, ds.x.shape[1:])
    except ValueError as exc:
        raise TrainError(str(exc)) from exc
    criterion = build_criterion(config.loss, **config.loss_params()).to(device)
    if criterion.needs_pairs:
        check_pairs_possible(ds)
    # A data set's own test split (fashion-mnist's t10k, or --test-dataset) replaces the split-off one.
    given_test = load_test_dataset(
        str(config.dataset), config.test_dataset, root=data_root, label_column=config.label_column
    )
    splits = split_dataset(
        ds,
        val_fraction=config.val_fraction,
        calib_fraction=config.calib_fraction,
        test_fraction=0.0 if given_test is not None else config.test_fraction,
        seed=config.seed,
    )
    if given_test is not None:
        splits.test = align_test_set(given_test, ds)
    train_set = splits.train
    if len(splits.val.y) == 0:
        raise TrainError("the validation split is empty; raise val_fraction or add data")
    kind = "image" if train_set.x.ndim == 4 else "vector"
    x_train = torch.from_numpy(train_set.x)
    y_train = torch.from_numpy(train_set.y)
    if device.type == "cuda":
        x_train = x_train.pin_memory()  # lets batch copies overlap with compute (non_blocking)

    # --- model, loss, optimiser -------------------------------------------------------------
    standardize = Standardize.fit(x_train)

    def make_model() -> TrainingModel:
        return build_model(
            encoder=config.encoder,
            input_shape=train_set.x.shape[1:],
            standardize=copy.deepcopy(standardize),
            embedding_dim=config.embedding_dim,
            hidden=config.hidden,
            channels=config.channels,
            projection_dim=config.projection_dim,
            n_classes=ds.n_classes if criterion.classifier else None,
            export_head=config.export == "projection",
        )

    model = make_model().to(device)
    # The CNN runs channels-last: oneDNN (CPU) and cuDNN convolutions are faster in NHWC (on the 2-core
    # CPU a training step took 0.7 s instead of 1.0-1.4 s). The exported module is built afresh, in NCHW.
    channels_last = config.encoder == "cnn"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    trained: nn.Module = model
    if world.distributed:
        if device.type == "cuda":  # batch statistics over the global batch (SyncBatchNorm is CUDA-only)
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if world.distributed:
        torch.manual_seed(config.seed + 1_000_003 * world.rank)  # same weights, different augmentation noise
    if config.optimizer == "adamw":
        optimizer: torch.optim.Optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
    else:
        optimizer = torch.optim.SGD(
            model.parameters(), lr=config.lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay
        )
    sampler = PKSampler(
        train_set.y, config.batch_size, config.samples_per_class, seed=config.seed, rank=world.rank,
        world_size=world.size,
    )  # fmt: skip
    steps_per_epoch = (
        len(sampler)
        if criterion.class_balanced
        else len(shard_batches(random_batches(len(y_train), config.batch_size, 0, 0), world))
    )
    if steps_per_epoch == 0:
        raise TrainError(
            f"no full batch of {config.batch_size} per rank fits the {len(y_train)} training samples "
            f"on {world.size} rank(s); lower batch_size"
        )
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = int(config.warmup_epochs * steps_per_epoch)
    use_amp = config.amp and device.type == "cuda"

    # --- run directory, resume ----------------------------------------------------------------
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / CHECKPOINT_FILE
    start_epoch, global_step, bad_epochs = 0, 0, 0
    best_score, best_state, best_epoch = -math.inf, copy.deepcopy(model.encoder.state_dict()), 0
    # evaluate_embeddings leaves MAP@R out when no validation label occurs twice (tiny data sets)
    references = reference_sample(len(train_set.y), EPOCH_REFERENCES, config.seed)
    ref_x, ref_y = train_set.x[references], train_set.y[references]
    augmenting = wants_augment(config, len(train_set.y), ds.n_classes)
    log.info(
        "augmentation %s (%d training items, %d classes)",
        "on" if augmenting else "off",
        len(y_train),
        ds.n_classes,
    )
    monitor = MONITOR if np.bincount(splits.val.y).max(initial=0) >= 2 else FALLBACK_MONITOR
    history: list[dict[str, Any]] = []
    if resume:
        if not ckpt_path.exists():
            raise TrainError(f"--resume: no checkpoint at {ckpt_path}")
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start_epoch, global_step = ckpt["epoch"], ckpt["global_step"]
        best_score, best_state, bad_epochs = ckpt["best_score"], ckpt["best_state"], ckpt["bad_epochs"]
        best_epoch = ckpt.get("best_epoch", 0)
        history = ckpt["history"]
        torch.set_rng_state(ckpt["rng"])
        log.info("resumed %s at epoch %d", model_id, start_epoch)

    # --- the loop -----------------------------------------------------------------------------
    for epoch in range(start_epoch, config.epochs):
        trained.train()
        if criterion.class_balanced:
            sampler.set_epoch(epoch)
            batches = list(sampler)
        else:
            batches = shard_batches(
                random_batches(len(y_train), config.batch_size, config.seed, epoch), world
            )
        epoch_loss, epoch_start = 0.0, time.perf_counter()
        for step, idx in enumerate(batches):
            index = torch.as_tensor(idx)
            xb = x_train[index].to(device, non_blocking=True)
            yb = y_train[index].to(device, non_blocking=True)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(global_step, total_steps, warmup_steps, config.lr)
            if criterion.views > 1:
                inputs = two_views(xb, kind)  # (B, 2, ...): the only positives are a sample's two views
            else:
                inputs = augment(xb, kind) if augmenting else xb
                if channels_last:
                    inputs = inputs.contiguous(memory_format=torch.channels_last)
            optimizer.zero_grad(set_to_none=True)
            loss = training_step(
                trained,
                criterion,
                inputs,
                yb,
                views=criterion.views,
                world=world,
                use_amp=use_amp,
            )
            optimizer.step()
            global_step += 1
            epoch_loss += float(loss.detach())
            if report and (step % log_every == 0 or step == len(batches) - 1):
                report(
                    Progress("train", epoch + 1, config.epochs, step + 1, len(batches), float(loss.detach()))
                )

        stop = False
        if world.is_main:
            # Evaluate on validation: queries = validation, references = train (as the service will).
            seconds = time.perf_counter() - epoch_start
            val_metrics = evaluate_embeddings(
                embed(model.encoder, ref_x, device, channels_last=channels_last),
                ref_y,
                embed(model.encoder, splits.val.x, device, channels_last=channels_last),
                splits.val.y,
                "cosine",
            )
            record = {
                "epoch": epoch + 1,
                "loss": epoch_loss / max(1, len(batches)),
                "steps": len(batches),
                "seconds": seconds,
                "lr": optimizer.param_groups[0]["lr"],
                **{f"val_{k}": v for k, v in val_metrics.items()},
            }
            history.append(record)
            score = val_metrics[monitor]
            if score > best_score:
                best_score, best_epoch, bad_epochs = score, epoch + 1, 0
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
                    "best_epoch": best_epoch,
                    "bad_epochs": bad_epochs,
                    "history": history,
                    "rng": torch.get_rng_state(),
                    "config": config.model_dump(mode="json"),
                },
            )
            if report:
                report(
                    Progress(
                        "epoch", epoch + 1, config.epochs, len(batches), len(batches), record["loss"], record
                    )
                )
            stop = bool(config.patience and bad_epochs >= config.patience)
            if stop:
                log.info("early stop at epoch %d: no %s gain for %d epochs", epoch + 1, monitor, bad_epochs)
        if broadcast_object(stop, world):  # rank 0 decides; every rank leaves the loop together
            break

    if not world.is_main:
        return None

    # --- final evaluation, calibration, export (rank 0) ---------------------------------------
    # A fresh module takes the best weights: plain BatchNorm even if training used SyncBatchNorm.
    encoder = make_model().encoder.to(device)
    encoder.load_state_dict(best_state)
    encoder.eval()
    if channels_last:  # for speed while evaluating; the exported weights go back to the plain layout
        encoder.to(memory_format=torch.channels_last)
    metrics, threshold, plots = _final_metrics(encoder, splits, config, device, channels_last)
    encoder.to(memory_format=torch.contiguous_format)
    # the layer it serves, read off the module itself (no head for ce, projection_dim 0 or export=backbone)
    exported = "backbone" if isinstance(encoder.head, nn.Identity) else "projection"
    metrics["best_val_" + monitor] = best_score
    metrics["epochs_run"] = float(len(history))
    metrics["best_epoch"] = float(best_epoch)
    metrics["train_seconds"] = time.perf_counter() - started
    if report:
        report(Progress("final", len(history), config.epochs, 0, 0, None, metrics))

    card = ModelCard(
        model_id=model_id,
        input=ds.input_spec(),
        embedding_dim=config.projection_dim if exported == "projection" else config.embedding_dim,
        normalized=True,
        distance="cosine",
        loss=loss_card(config, criterion),
        encoder={
            "name": config.encoder,
            "hidden": config.hidden,
            "channels": config.channels,
            "embedding_dim": config.embedding_dim,
            "projection_dim": config.projection_dim,
            "exported": exported,  # the projection head's normalised output, or the backbone's
        },
        dataset=splits.card_info(),
        metrics=metrics,
        threshold=threshold,
        config=config.model_dump(mode="json"),
        encoder_sha256=PLACEHOLDER_SHA,
        versions={
            "trainer": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "world_size": str(world.size),
        },
    )
    example = torch.from_numpy(splits.val.x[: min(8, len(splits.val.y))]).float()
    from trainer.report import render_report  # matplotlib is only needed at the very end

    extra = render_report(card, history, {**plots, "monitor": monitor, "augmented": augmenting})
    model_dir = write_model_dir(encoder, card, out_dir / model_id, example, extra_files=extra)
    return TrainResult(model_dir, read_card(model_dir), history, time.perf_counter() - started, splits)
