"""What the grid runs: the cells (loss × batch size/lr × seed), presets, and each cell's training config.

Also the grid's files on disk (``grid.json``, ``runs/<cell>/...``) and the JSON helpers every part uses.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from trainer.config import LOSS_NAMES, TrainConfig, format_validation_error

BASELINE = "ce"
# Table order: the baseline first, then the article's order; unknown labels go last.
LOSS_ORDER = (
    "ce",
    "contrastive",
    "triplet:all",
    "triplet:hard",
    "triplet:semihard",
    "npair",
    "supcon",
    "ntxent",
)
MINING_MODES = ("all", "hard", "semihard")
GRID_FILE = "grid.json"
RUNS_DIR = "runs"
METRICS_FILE = "metrics.json"
CHILD_RESULT = "result.json"
CELL_FILE = "cell.json"
LOG_FILE = "run.log"
PCA_FILE = "pca.npz"
# An embedding counts as collapsed when its linear probe or kNN-5 accuracy ends this close to chance.


class CompareError(RuntimeError):
    """The grid cannot run as asked (bad loss name, an out dir holding another grid...)."""


# --- the grid -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One training run of the grid."""

    loss: str  # table label: "ce", "triplet:semihard", "supcon", ...
    batch_size: int
    lr: float
    seed: int

    @property
    def name(self) -> str:
        return f"{self.loss.replace(':', '-')}_b{self.batch_size}_lr{self.lr:g}_s{self.seed}"


@dataclass(frozen=True)
class GridSpec:
    """What to run. ``schedule`` pairs each batch size with its learning rate, as the article did."""

    dataset: str
    losses: tuple[str, ...]
    schedule: tuple[tuple[int, float], ...]
    seeds: int
    epochs: int
    temperature: float  # supcon (and ntxent): the article used 0.5 (our trainer's default is 0.1)
    limit: int | None = None  # a stratified subset of this many samples; None = the whole data set

    def cells(self) -> list[Cell]:
        return [
            Cell(loss, batch_size, lr, seed)
            for seed in range(self.seeds)
            for batch_size, lr in self.schedule
            for loss in self.losses
        ]

    def shared(self) -> dict[str, Any]:
        """Settings every cell shares: runs made under other values must not be mixed into one report."""
        return {
            "dataset": self.dataset,
            "epochs": self.epochs,
            "temperature": self.temperature,
            "limit": self.limit,
        }

    def command(self, out: Path) -> str:
        """The canonical command line that (re)creates this grid."""
        args = [
            "python", "-m", "trainer", "compare",
            "--dataset", self.dataset,
            "--losses", ",".join(self.losses),
            "--batch-sizes", ",".join(str(b) for b, _ in self.schedule),
            "--lrs", ",".join(f"{lr:g}" for _, lr in self.schedule),
            "--seeds", str(self.seeds),
            "--epochs", str(self.epochs),
            "--temperature", f"{self.temperature:g}",
            *(["--limit", str(self.limit)] if self.limit else []),
            "--out", str(out),
        ]  # fmt: skip
        return shlex.join(args)


FULL_PRESET: dict[str, Any] = {
    "dataset": "mnist-5k",
    "losses": ("ce", "contrastive", "triplet:all", "triplet:hard", "triplet:semihard", "npair", "supcon"),
    "batch_sizes": (32, 256, 2048),
    "lrs": (0.001, 0.01, 0.2),
    "seeds": 3,
    "epochs": 30,
    "temperature": 0.5,
    "limit": None,
}
# A smoke run: 2 losses + the baseline, two batch sizes, 1 seed, 2 epochs, 1,000 samples (< 1 minute).
QUICK_PRESET: dict[str, Any] = {
    **FULL_PRESET,
    "losses": ("ce", "contrastive", "supcon"),
    "batch_sizes": (32, 256),
    "lrs": (0.001, 0.01),
    "seeds": 1,
    "epochs": 2,
    "limit": 1000,
}
REPRODUCTION = Path("docs/reproduction")  # one folder per data set, and a summary of them all


def default_out(dataset: str) -> Path:
    """``docs/reproduction/<data set>``, the name made safe for a folder."""
    return REPRODUCTION / (re.sub(r"[^A-Za-z0-9._-]+", "-", Path(dataset).name).strip("-") or "data")


def has_official_test(dataset: str) -> bool:
    """Built-ins that bring their own test split (the trainer keeps it, see ``load_test_dataset``)."""
    return dataset == "fashion-mnist"


QUICK_OUT = Path("runs/compare-quick")


def normalize_loss(label: str) -> str:
    """``"triplet"`` → ``"triplet:semihard"``; raise :class:`CompareError` on anything unknown."""
    loss, _, mining = label.strip().partition(":")
    if loss not in LOSS_NAMES:
        raise CompareError(f"unknown loss {label!r}; valid: {', '.join(LOSS_NAMES)} (triplet:MINING)")
    if loss != "triplet":
        if mining:
            raise CompareError(f"{label!r}: only triplet takes a mining mode")
        return loss
    mining = mining or "semihard"
    if mining not in MINING_MODES:
        raise CompareError(f"{label!r}: unknown mining mode; valid: {', '.join(MINING_MODES)}")
    return f"triplet:{mining}"


def grid_spec(quick: bool = False, **given: Any) -> GridSpec:
    """The preset (full or ``quick``) with the options that were given (not ``None``) laid over it."""
    opts = {**(QUICK_PRESET if quick else FULL_PRESET), **{k: v for k, v in given.items() if v is not None}}
    losses = tuple(dict.fromkeys(normalize_loss(name) for name in opts["losses"]))
    batch_sizes, lrs = tuple(opts["batch_sizes"]), tuple(opts["lrs"])
    if len(batch_sizes) != len(lrs):
        raise CompareError(
            f"--batch-sizes and --lrs are paired, one learning rate per batch size: "
            f"got {len(batch_sizes)} batch sizes and {len(lrs)} learning rates"
        )
    if len(set(batch_sizes)) != len(batch_sizes):
        raise CompareError("--batch-sizes: each batch size may appear once")
    if opts["limit"] is not None and opts["limit"] < 2:
        raise CompareError(f"--limit must be at least 2 samples, got {opts['limit']}")
    if not losses or not batch_sizes or opts["seeds"] < 1:
        raise CompareError("the grid is empty: give at least one loss, one batch size and one seed")
    spec = GridSpec(
        dataset=str(opts["dataset"]),
        losses=losses,
        schedule=tuple(zip(batch_sizes, lrs, strict=True)),
        seeds=int(opts["seeds"]),
        epochs=int(opts["epochs"]),
        temperature=float(opts["temperature"]),
        limit=opts["limit"],
    )
    for cell in spec.cells()[: len(losses) * len(batch_sizes)]:
        cell_config(spec, cell)  # a bad batch size or lr fails here, before any run starts
    return spec


def cell_config(spec: GridSpec, cell: Cell) -> TrainConfig:
    """The article's setup for one cell: MLP 784-256-256, fixed epochs, no early stop, no augmentation."""
    loss, _, mining = cell.loss.partition(":")
    fields: dict[str, Any] = {
        "dataset": spec.dataset,
        "loss": loss,
        "batch_size": cell.batch_size,
        "lr": cell.lr,
        "seed": cell.seed,
        "epochs": spec.epochs,
        "patience": 0,  # same epochs for every run
        "augment": False,  # the article trains on the raw images
        "encoder": "mlp",
        "hidden": [256],
        "embedding_dim": 256,
        "projection_dim": 128,  # pinned: the grid must not move when the trainer's defaults do
        "export": "backbone",  # the article evaluates the encoder's output, before the projection head
        "name": cell.name,
    }
    if mining:
        fields["mining"] = mining
    if loss in ("supcon", "ntxent"):
        fields["temperature"] = spec.temperature
    try:
        return TrainConfig(**fields)
    except ValidationError as exc:
        raise CompareError(f"cell {cell.name}: {format_validation_error(exc)}") from exc


def write_json(path: Path, data: Any) -> None:
    """Atomic write: a reader (or a resumed grid) never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def open_grid(spec: GridSpec, out: Path) -> dict[str, Any]:
    """Load ``grid.json`` (or start one), refusing to mix runs made with other shared settings."""
    path = out / GRID_FILE
    grid: dict[str, Any] = read_json(path) if path.exists() else {"sessions": []}
    old = grid.get("spec")
    if old is not None:
        old_shared = GridSpec(**{**old, "losses": (), "schedule": ()}).shared()
        diff = {k: (old_shared[k], v) for k, v in spec.shared().items() if old_shared[k] != v}
        if diff:
            shown = ", ".join(f"{k} {a!r} there vs {b!r} now" for k, (a, b) in diff.items())
            raise CompareError(f"{out} holds a grid run with other settings ({shown}); use another --out")
    grid["spec"] = asdict(spec)
    return grid


def load_spec(grid: dict[str, Any]) -> GridSpec:
    raw = grid["spec"]
    return GridSpec(**{**raw, "losses": tuple(raw["losses"]), "schedule": tuple(map(tuple, raw["schedule"]))})
