"""The recorded runs, grouped per (loss, batch size) with their statistics over seeds."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.compare.grid import LOSS_ORDER, METRICS_FILE, RUNS_DIR, read_json

PROBE, KNN = "linear_probe_accuracy", "knn_5_accuracy"
# --- aggregation -------------------------------------------------------------------------------

# Each run keeps the test metrics of two sets of weights: the best-validation epoch, which the
# trainer exports (its model card's metrics), and the last epoch, which is what the article evaluates.
EPOCHS = {"best": "metrics", "last": "last_epoch"}
EPOCH_TEXT = {"best": "best-validation epoch", "last": "last epoch"}


@dataclass
class Stat:
    values: list[float]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return sum(self.values) / self.n if self.values else math.nan

    @property
    def sd(self) -> float:
        """Sample standard deviation over seeds (0 for a single run)."""
        if self.n < 2:
            return 0.0 if self.values else math.nan
        m = self.mean
        return math.sqrt(sum((v - m) ** 2 for v in self.values) / (self.n - 1))


@dataclass
class Group:
    """All seeds of one (loss, batch size) pair."""

    loss: str
    batch_size: int
    lr: float
    runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> list[dict[str, Any]]:
        return [r for r in self.runs if r["status"] == "ok"]

    def stat(self, key: str, epoch: str = "best") -> Stat:
        return Stat([float(r[EPOCHS[epoch]][key]) for r in self.ok])

    def acc(self, epoch: str = "best") -> float:
        """Mean linear-probe accuracy: the number every verdict is computed from."""
        return self.stat(PROBE, epoch).mean

    @property
    def median_wall(self) -> float:
        """Median over seeds: robust to one run slowed down by other work on the machine."""
        return statistics.median(float(r["wall_seconds"]) for r in self.runs)

    @property
    def peak_mb(self) -> float:
        peaks = [r["peak_rss_mb"] for r in self.runs if r.get("peak_rss_mb") is not None]
        return max(peaks) if peaks else math.nan

    @property
    def statuses(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.runs:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        return counts


Groups = dict[tuple[str, int], Group]


def load_runs(out: Path) -> list[dict[str, Any]]:
    """Every recorded cell of the grid in ``out``, read from its ``metrics.json``."""
    return [read_json(p) for p in sorted((out / RUNS_DIR).glob(f"*/{METRICS_FILE}"))]


def group_runs(runs: Iterable[dict[str, Any]]) -> Groups:
    groups: Groups = {}
    for run in runs:
        cell = run["cell"]
        key = (cell["loss"], int(cell["batch_size"]))
        groups.setdefault(key, Group(cell["loss"], key[1], float(cell["lr"]))).runs.append(run)
    return groups


def finished(groups: Groups, loss: str, batch_size: int) -> Group | None:
    group = groups.get((loss, batch_size))
    return group if group is not None and group.ok else None


def lr_at(groups: Groups, size: int) -> float:
    """The learning rate paired with batch size ``size``."""
    return next(g.lr for (_, b), g in groups.items() if b == size)


def loss_order(labels: Iterable[str]) -> list[str]:
    labels = set(labels)
    known = [name for name in LOSS_ORDER if name in labels]
    return known + sorted(labels - set(known))
