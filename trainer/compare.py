"""Reproduce the seed article's loss comparison: a grid of training runs and a report generated from them.

The grid is losses × (batch size, learning rate) pairs × seeds, every run the same encoder and
epochs, evaluated the article's two-stage way (frozen encoder + linear classifier) and by kNN-5.

Each cell is one ``trainer.train.train`` call in its own subprocess (``python -m trainer.compare
CELL_DIR``): a cell that crashes, runs out of memory or times out is recorded as such instead of
ending the grid, and its peak memory is the child's own ``ru_maxrss``. A finished cell leaves
``<out>/runs/<cell>/metrics.json`` (written only by the parent, atomically), so a rerun skips it:
that is the whole resume mechanism. ``README.md`` and the figures are rendered from those files
alone, never from in-memory results, so ``--report-only`` regenerates them from disk.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from trainer.config import LOSS_NAMES, TrainConfig

if TYPE_CHECKING:  # torch, numpy and the data loaders load lazily: the parent process needs none of them
    import numpy as np

    from trainer.data import Dataset

log = logging.getLogger(__name__)

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
COLLAPSE_MARGIN = 0.1
PROBE, KNN = "linear_probe_accuracy", "knn_5_accuracy"


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
DEFAULT_OUT = Path("docs/reproduction")
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
        "name": cell.name,
    }
    if mining:
        fields["mining"] = mining
    if loss in ("supcon", "ntxent"):
        fields["temperature"] = spec.temperature
    try:
        return TrainConfig(**fields)
    except ValidationError as exc:
        from trainer.cli import format_validation_error

        raise CompareError(f"cell {cell.name}: {format_validation_error(exc)}") from exc


# --- running the grid (parent) ----------------------------------------------------------------


@dataclass
class RunSummary:
    ran: int
    skipped: int
    failed: int
    seconds: float
    report: Path


def machine_info() -> dict[str, Any]:
    """Where the runs ran, for the report (read at run time, not at report time)."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        kb = next(ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal"))
        mem_gb = round(int(kb.split()[1]) / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        pass
    return {
        "cpu": cpu,
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gb": mem_gb,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _write_json(path: Path, data: Any) -> None:
    """Atomic write: a reader (or a resumed grid) never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _open_grid(spec: GridSpec, out: Path) -> dict[str, Any]:
    """Load ``grid.json`` (or start one), refusing to mix runs made with other shared settings."""
    path = out / GRID_FILE
    grid: dict[str, Any] = _read_json(path) if path.exists() else {"sessions": []}
    old = grid.get("spec")
    if old is not None:
        old_shared = GridSpec(**{**old, "losses": (), "schedule": ()}).shared()
        diff = {k: (old_shared[k], v) for k, v in spec.shared().items() if old_shared[k] != v}
        if diff:
            shown = ", ".join(f"{k} {a!r} there vs {b!r} now" for k, (a, b) in diff.items())
            raise CompareError(f"{out} holds a grid run with other settings ({shown}); use another --out")
    grid["spec"] = asdict(spec)
    return grid


def run_grid(
    spec: GridSpec,
    out: Path,
    *,
    jobs: int = 1,
    timeout: float | None = None,
    retry_failed: bool = False,
    quiet: bool = False,
) -> RunSummary:
    """Run every cell not already done (``metrics.json`` present), then render the report."""
    from tqdm import tqdm

    if jobs < 1:
        raise CompareError(f"--jobs must be at least 1, got {jobs}")
    timeout = timeout if timeout and timeout > 0 else None  # 0 = no limit
    started, wall_start = datetime.now(UTC), time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    (out / RUNS_DIR).mkdir(exist_ok=True)
    grid = _open_grid(spec, out)
    _write_json(out / GRID_FILE, grid)

    cells = spec.cells()
    todo = [c for c in cells if _needs_run(out / RUNS_DIR / c.name, retry_failed)]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cpus // jobs)  # jobs × threads ≤ cores, so parallel runs do not fight over them
    if not quiet:
        log.info(
            "%d cells, %d already done, %d to run (jobs %d, torch threads %d per run) → %s",
            len(cells),
            len(cells) - len(todo),
            len(todo),
            jobs,
            threads,
            out,
        )

    runner = _Runner(spec, out, threads=threads, timeout=timeout)
    ran = failed = 0
    interactive = sys.stderr.isatty() and not quiet
    bar = tqdm(total=len(todo), unit="run", desc="compare", disable=not interactive or not todo)
    pool = ThreadPoolExecutor(max_workers=jobs)
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous_sigterm = signal.signal(signal.SIGTERM, _interrupt) if on_main_thread else None
    try:
        futures = [pool.submit(runner.run, cell) for cell in todo]
        for future in as_completed(futures):
            record = future.result()
            ran += 1
            failed += record["status"] != "ok"
            line = _progress_line(record)
            bar.set_postfix_str(line, refresh=False)
            bar.update()
            if not quiet and not interactive:
                log.info("[%d/%d] %s", ran, len(todo), line)
    except BaseException:
        runner.stop()  # Ctrl-C or SIGTERM: kill the children; their cells stay unrecorded and rerun
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous_sigterm)
        # Recorded even when interrupted, so the report's total wall time covers every invocation.
        grid["sessions"].append(
            {
                "started": started.isoformat(timespec="seconds"),
                "seconds": round(time.perf_counter() - wall_start, 1),
                "cells_run": ran,
                "cells_skipped": len(cells) - len(todo),
                "interrupted": ran < len(todo),
                "jobs": jobs,
                "threads_per_run": threads,
                "machine": machine_info(),
            }
        )
        _write_json(out / GRID_FILE, grid)
    report = render_report(out)
    return RunSummary(ran, len(cells) - len(todo), failed, grid["sessions"][-1]["seconds"], report)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _needs_run(cell_dir: Path, retry_failed: bool) -> bool:
    path = cell_dir / METRICS_FILE
    if not path.exists():
        return True
    return retry_failed and _read_json(path).get("status") != "ok"


def _progress_line(record: dict[str, Any]) -> str:
    name = record["cell"]["name"]
    if record["status"] != "ok":
        return f"{name}: {record['status'].upper()} ({record['wall_seconds']:.0f} s)"
    m = record["metrics"]
    return f"{name}: probe {m[PROBE]:.4f} kNN-5 {m[KNN]:.4f} ({record['wall_seconds']:.0f} s)"


class _Runner:
    """Runs cells in child processes and records each outcome in the cell's ``metrics.json``."""

    def __init__(self, spec: GridSpec, out: Path, *, threads: int, timeout: float | None) -> None:
        self.spec, self.out, self.threads, self.timeout = spec, out, threads, timeout
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen[bytes]] = set()

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            for proc in self._procs:
                proc.kill()

    def run(self, cell: Cell) -> dict[str, Any]:
        cell_dir = self.out / RUNS_DIR / cell.name
        shutil.rmtree(cell_dir, ignore_errors=True)  # leftovers of an interrupted attempt
        cell_dir.mkdir(parents=True)
        config = cell_config(self.spec, cell)
        _write_json(
            cell_dir / CELL_FILE,
            {
                "config": config.model_dump(mode="json"),
                "limit": self.spec.limit,
                "data_root": str(Path.cwd()),
                "threads": self.threads,
            },
        )
        exit_code, rusage, seconds, timed_out = self._spawn(cell_dir)
        if self._stopping.is_set():
            raise KeyboardInterrupt  # never record a cell that was killed because the grid was stopped
        record: dict[str, Any] = {
            "cell": {**asdict(cell), "name": cell.name},
            "status": "ok",
            "wall_seconds": round(seconds, 2),
            "peak_rss_mb": round(rusage.ru_maxrss / 1024, 1) if rusage else None,  # Linux: KiB
            "exit_code": exit_code,
            "threads": self.threads,
            "config": config.model_dump(mode="json"),
        }
        result_path = cell_dir / CHILD_RESULT
        log_path = cell_dir / LOG_FILE
        if exit_code == 0 and result_path.exists():
            record.update(_read_json(result_path))
            result_path.unlink()
            log_path.unlink(missing_ok=True)
        else:
            record["status"], record["error"] = _failure(exit_code, timed_out, log_path, self.timeout)
        _write_json(cell_dir / METRICS_FILE, record)
        (cell_dir / CELL_FILE).unlink(missing_ok=True)
        return record

    def _spawn(self, cell_dir: Path) -> tuple[int, Any, float, bool]:
        """Run the child; return its exit code (−signal if killed), its rusage, wall seconds, timed out."""
        package_root = str(Path(__file__).resolve().parents[1])
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
            "OMP_NUM_THREADS": str(self.threads),
            "MKL_NUM_THREADS": str(self.threads),
        }
        start = time.perf_counter()
        with open(cell_dir / LOG_FILE, "wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "trainer.compare", str(cell_dir)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # Ctrl-C reaches the parent only; it stops the children itself
            )
        with self._lock:
            self._procs.add(proc)
        timed_out = threading.Event()

        def expire() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(self.timeout, expire) if self.timeout else None
        if timer:
            timer.daemon = True
            timer.start()
        try:
            # wait4, not Popen.wait: it hands back this child's own rusage (ru_maxrss = its peak RSS).
            _, status, rusage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        finally:
            if timer:
                timer.cancel()
            with self._lock:
                self._procs.discard(proc)
        return proc.returncode, rusage, time.perf_counter() - start, timed_out.is_set()


def _failure(exit_code: int, timed_out: bool, log_path: Path, timeout: float | None) -> tuple[str, str]:
    """Status and a short reason for a cell whose child did not finish cleanly."""
    tail = ""
    if log_path.exists():
        lines = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        tail = "\n".join(lines[-15:])
    if timed_out:
        return "timeout", f"killed after the {timeout:g} s per-run limit"
    lowered = tail.lower()
    if "out of memory" in lowered or "memoryerror" in lowered or "can't allocate memory" in lowered:
        return "oom", tail
    if exit_code == -signal.SIGKILL:
        return "oom", "killed by SIGKILL (most likely the kernel's out-of-memory killer)\n" + tail
    reason = f"killed by signal {-exit_code}" if exit_code < 0 else f"exit code {exit_code}"
    return "failed", f"{reason}\n{tail}".strip()


# --- one cell (child process) -------------------------------------------------------------------


def run_cell(cell_dir: Path) -> None:
    """Train one cell as ``cell.json`` describes; leave ``result.json`` and ``pca.npz`` beside it."""
    import numpy as np
    import torch

    from trainer.data import load_dataset
    from trainer.export import load_scripted
    from trainer.metrics import evaluate_embeddings, linear_probe_accuracy, pca_2d
    from trainer.train import CHECKPOINT_FILE, embed, train

    job = _read_json(cell_dir / CELL_FILE)
    torch.set_num_threads(job["threads"])
    config = TrainConfig.model_validate(job["config"])
    dataset = load_dataset(str(config.dataset), root=Path(job["data_root"]))
    if job["limit"]:
        dataset = _stratified_subset(dataset, job["limit"])
    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory(dir=cell_dir) as tmp:
        result = train(config, out_dir=tmp, dataset=dataset)
        assert result is not None  # None only on the non-zero ranks of a torchrun job
        splits = result.splits
        test = splits.test if splits.test is not None else splits.val
        # train() exports the best-validation epoch; the article evaluates the weights after the last
        # epoch, which train()'s checkpoint (<out>/.runs/<name>/) holds. Evaluate those as well.
        encoder = load_scripted(Path(result.model_dir) / "encoder.pt")
        best_mean_cosine = _mean_cosine(embed(encoder, test.x, cpu))
        checkpoint = torch.load(
            Path(tmp) / ".runs" / result.card.model_id / CHECKPOINT_FILE, map_location=cpu, weights_only=False
        )
        encoder.load_state_dict(
            {
                k.removeprefix("encoder."): v
                for k, v in checkpoint["model"].items()
                if k.startswith("encoder.")
            }
        )
    train_emb, test_emb = embed(encoder, splits.train.x, cpu), embed(encoder, test.x, cpu)
    last_epoch = {
        PROBE: linear_probe_accuracy(train_emb, splits.train.y, test_emb, test.y, seed=config.seed),
        KNN: evaluate_embeddings(train_emb, splits.train.y, test_emb, test.y, "cosine")[KNN],
        "mean_cosine": _mean_cosine(test_emb),
    }
    np.savez_compressed(  # the PCA figure shows the last-epoch embeddings, as the article's does
        cell_dir / PCA_FILE,
        points=pca_2d(test_emb).astype(np.float16),
        labels=test.y.astype(np.int16),
        label_names=np.array(dataset.label_names),
    )
    _write_json(
        cell_dir / CHILD_RESULT,
        {
            "metrics": result.card.metrics,
            "best_epoch": {"mean_cosine": best_mean_cosine},
            "last_epoch": last_epoch,
            "history": result.history,
            "dataset": result.card.dataset.model_dump(mode="json"),
            "steps_per_epoch": result.history[-1]["steps"],
            "train_seconds": round(result.seconds, 2),
        },
    )


def _stratified_subset(dataset: Dataset, limit: int) -> Dataset:
    """``limit`` samples in the class proportions of the whole set (fixed, seed 0, for every cell)."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    if limit >= len(dataset):
        return dataset
    index = np.arange(len(dataset))
    try:
        keep, _ = train_test_split(index, train_size=limit, stratify=dataset.y, random_state=0)
    except ValueError:  # a class too small to stratify
        keep, _ = train_test_split(index, train_size=limit, random_state=0)
    return dataset.subset(np.sort(keep))


def _mean_cosine(emb: np.ndarray) -> float:
    """Mean cosine similarity over distinct pairs of unit embeddings: near 1 means collapse."""
    import numpy as np

    n = len(emb)
    if n < 2:
        return float("nan")
    total = np.asarray(emb, dtype=np.float64).sum(axis=0)
    return float((total @ total - n) / (n * (n - 1)))


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
    return [_read_json(p) for p in sorted((out / RUNS_DIR).glob(f"*/{METRICS_FILE}"))]


def group_runs(runs: Iterable[dict[str, Any]]) -> Groups:
    groups: Groups = {}
    for run in runs:
        cell = run["cell"]
        key = (cell["loss"], int(cell["batch_size"]))
        groups.setdefault(key, Group(cell["loss"], key[1], float(cell["lr"]))).runs.append(run)
    return groups


def _finished(groups: Groups, loss: str, batch_size: int) -> Group | None:
    group = groups.get((loss, batch_size))
    return group if group is not None and group.ok else None


def _lr_at(groups: Groups, size: int) -> float:
    """The learning rate paired with batch size ``size``."""
    return next(g.lr for (_, b), g in groups.items() if b == size)


def _loss_order(labels: Iterable[str]) -> list[str]:
    labels = set(labels)
    known = [name for name in LOSS_ORDER if name in labels]
    return known + sorted(labels - set(known))


# --- the article's findings, checked against our numbers --------------------------------------------


@dataclass
class Finding:
    verdict: str  # "confirmed", "partly confirmed", "contradicted", "cannot say"
    evidence: str


FINDINGS = (
    "every contrastive loss except triplet with hard mining beats the MLP baseline",
    "semi-hard mining works best among the triplet variants (as FaceNet reported)",
    "accuracy falls as batch size grows for all losses",
    "supervised NT-Xent degrades least at large batch",
    "hard-mining triplet collapses",
    "semi-hard triplet ran out of memory at batch 2048 on a 16 GB machine",
)


def check_findings(groups: Groups, batch_sizes: Sequence[int], epoch: str) -> list[Finding]:
    """A verdict on each of :data:`FINDINGS`, from the mean linear-probe accuracies at ``epoch``."""
    losses = _loss_order({loss for loss, _ in groups})
    contrastive = [loss for loss in losses if loss != BASELINE]
    small, large = (batch_sizes[0], batch_sizes[-1]) if batch_sizes else (0, 0)
    return [
        _beats_baseline(groups, contrastive, small, epoch),
        _semihard_best(groups, batch_sizes, small, epoch),
        _falls_with_batch(groups, losses, batch_sizes, epoch),
        _supcon_degrades_least(groups, contrastive, small, large, epoch),
        _hard_collapses(groups, batch_sizes, epoch),
        _semihard_oom(groups, large),
    ]


def _verdict(agree: int, total: int) -> str:
    return "confirmed" if agree == total else "contradicted" if agree == 0 else "partly confirmed"


def _names(losses: Iterable[str]) -> str:
    return ", ".join(f"`{x}`" for x in losses) or "none"


def _beats_baseline(groups: Groups, contrastive: list[str], b: int, epoch: str) -> Finding:
    """Judged at the smallest batch (B = 32, lr = 0.001 in the article). A loss beats the baseline
    when its mean is higher by more than the seeds' sd (the larger of the two); a smaller gap is a tie."""
    base = _finished(groups, BASELINE, b)
    if base is None:
        return Finding("cannot say", f"No finished `{BASELINE}` baseline run at B = {b}.")
    rows, outcome = [], {}
    for loss in contrastive:
        group = _finished(groups, loss, b)
        if group is None:
            continue
        diff = group.acc(epoch) - base.acc(epoch)
        noise = max(group.stat(PROBE, epoch).sd, base.stat(PROBE, epoch).sd)
        outcome[loss] = "beats" if diff > noise else "loses" if diff < -noise else "ties"
        rows.append(f"`{loss}` {diff:+.4f} ({outcome[loss]}, sd {noise:.4f})")
    claimed = [loss for loss in outcome if loss != "triplet:hard"]  # the losses that should beat it
    if not claimed:
        return Finding("cannot say", f"No finished contrastive run besides `triplet:hard` at B = {b}.")
    verdict = _verdict(sum(outcome[loss] == "beats" for loss in claimed), len(claimed))
    if verdict == "confirmed" and outcome.get("triplet:hard") == "beats":
        verdict = "partly confirmed"  # the exception the article names did not hold
    beats, ties, loses = ([loss for loss, o in outcome.items() if o == k] for k in ("beats", "ties", "loses"))
    return Finding(
        verdict,
        f"At B = {b}, lr = {base.lr:g} (the article's setting for this claim), linear-probe accuracy "
        f"minus the baseline's {base.acc(epoch):.4f}: {', '.join(rows)}. Beat it: {_names(beats)}; "
        f"tie (gap within the seeds' sd): {_names(ties)}; below it: {_names(loses)}.",
    )


def _semihard_best(groups: Groups, batch_sizes: Sequence[int], b: int, epoch: str) -> Finding:
    """Judged at the smallest batch, where the article compares them; other batch sizes for context."""
    rows, best_at = [], {}
    for size in batch_sizes:
        found = {m: g for m in MINING_MODES if (g := _finished(groups, f"triplet:{m}", size))}
        if len(found) < 2:
            continue
        best_at[size] = max(found, key=lambda m: found[m].acc(epoch))
        shown = ", ".join(f"{m} {_pm(g.stat(PROBE, epoch))}" for m, g in found.items())
        rows.append(f"B = {size}: {shown} (best: {best_at[size]})")
    if b not in best_at:
        return Finding("cannot say", f"Fewer than two triplet variants finished at B = {b}.")
    if best_at[b] != "semihard":
        verdict = "contradicted"
    else:
        verdict = "confirmed" if all(m == "semihard" for m in best_at.values()) else "partly confirmed"
    return Finding(
        verdict,
        f"Linear-probe accuracy of the triplet variants (judged at B = {b}; confirmed outright only if "
        f"semi-hard is best at every batch size): {'; '.join(rows)}.",
    )


def _falls_with_batch(groups: Groups, losses: list[str], batch_sizes: Sequence[int], epoch: str) -> Finding:
    """Each loss's accuracy must fall strictly at every step up in batch size; the baseline is shown only."""
    if len(batch_sizes) < 2:
        return Finding("cannot say", "The grid has a single batch size.")
    rows, falling, judged = [], [], []
    for loss in losses:
        found = [_finished(groups, loss, size) for size in batch_sizes]
        if any(g is None for g in found):
            rows.append(f"`{loss}` incomplete")
            continue
        accs = [g.acc(epoch) for g in found if g is not None]
        rows.append(f"`{loss}` " + " → ".join(f"{a:.4f}" for a in accs))
        if loss != BASELINE:
            judged.append(loss)
            if all(a > b for a, b in zip(accs, accs[1:], strict=False)):
                falling.append(loss)
    if not judged:
        return Finding("cannot say", "No contrastive loss finished at every batch size.")
    return Finding(
        _verdict(len(falling), len(judged)),
        f"Linear-probe accuracy at B = {' → '.join(map(str, batch_sizes))} (each with its paired lr): "
        f"{'; '.join(rows)}. Strictly falling: {_names(falling)} ({len(falling)} of the {len(judged)} "
        f"contrastive losses; the `{BASELINE}` baseline is shown for reference).",
    )


def _supcon_degrades_least(
    groups: Groups, contrastive: list[str], small: int, large: int, epoch: str
) -> Finding:
    """Confirmed if supcon loses the least accuracy from the smallest to the largest batch; partly if
    it is only the most accurate loss at the largest batch. Losses collapsed at the smallest batch
    are left out (they cannot degrade)."""
    drop, at_large, skipped = {}, {}, []
    for loss in contrastive:
        a, b = _finished(groups, loss, small), _finished(groups, loss, large)
        if a is not None and _collapsed(a, epoch):
            skipped.append(loss)  # at chance already: it has nothing left to lose
        elif a is not None and b is not None:
            drop[loss], at_large[loss] = a.acc(epoch) - b.acc(epoch), b.acc(epoch)
    if "supcon" not in drop or len(drop) < 2 or small == large:
        return Finding("cannot say", f"`supcon` and another loss must finish at B = {small} and B = {large}.")
    least = min(drop, key=lambda x: drop[x])
    best_large = max(at_large, key=lambda x: at_large[x])
    verdict = (
        "confirmed" if least == "supcon" else "partly confirmed" if best_large == "supcon" else "contradicted"
    )
    ranked = ", ".join(f"`{x}` {drop[x]:+.4f}" for x in sorted(drop, key=lambda x: drop[x]))
    return Finding(
        verdict,
        f"Drop in linear-probe accuracy from B = {small} to B = {large}, smallest first: {ranked}. "
        f"Most accurate at B = {large}: `{best_large}` ({at_large[best_large]:.4f}"
        + ("" if best_large == "supcon" else f"; `supcon` {at_large['supcon']:.4f}")
        + ")."
        + (f" Left out as collapsed at B = {small}: {_names(skipped)}." if skipped else ""),
    )


def _collapsed(group: Group, epoch: str) -> bool:
    """The embedding carries (almost) no class information: probe or kNN-5 within a margin of chance."""
    chance = 1.0 / len(group.ok[0]["dataset"]["label_names"])
    worst = min(group.acc(epoch), group.stat(KNN, epoch).mean)
    return worst <= chance + COLLAPSE_MARGIN


def _hard_collapses(groups: Groups, batch_sizes: Sequence[int], epoch: str) -> Finding:
    """Confirmed if triplet:hard collapses at the smallest batch (the article's setting)."""
    rows, collapsed, others = [], [], []
    for size in batch_sizes:
        group = _finished(groups, "triplet:hard", size)
        if group is None:
            continue
        ranked = sorted((g.acc(epoch), loss) for (loss, b), g in groups.items() if b == size and g.ok)
        rank = [loss for _, loss in ranked[::-1]].index("triplet:hard") + 1
        rows.append(
            f"B = {size}: probe {group.acc(epoch):.4f}, kNN-5 {group.stat(KNN, epoch).mean:.4f} "
            f"(rank {rank} of {len(ranked)}), last-epoch mean pairwise cosine "
            f"{group.stat('mean_cosine', 'last').mean:.3f}"
        )
        if _collapsed(group, epoch):
            collapsed.append(size)
        others += [
            f"`{loss}` at B = {size}"
            for (loss, b), g in groups.items()
            if b == size and loss != "triplet:hard" and g.ok and _collapsed(g, epoch)
        ]
    if not rows:
        return Finding("cannot say", "No finished `triplet:hard` run.")
    if batch_sizes[0] in collapsed:
        verdict = "confirmed"
    else:
        verdict = "partly confirmed" if collapsed else "contradicted"
    return Finding(
        verdict,
        f"Collapsed here means the embedding carries almost no class information: linear probe or kNN-5 "
        f"within {COLLAPSE_MARGIN:g} of chance. `triplet:hard`: {'; '.join(rows)}. "
        f"Collapsed at: {', '.join(f'B = {b}' for b in collapsed) or 'no batch size'}; other losses "
        f"collapsed: {', '.join(others) or 'none'}. (A mean pairwise cosine near 1 means the embeddings "
        f"crowd into a narrow cone; classes can still be separable inside it.)",
    )


def _semihard_oom(groups: Groups, large: int) -> Finding:
    """About the article's machine, not testable here: report what our semi-hard miner needed."""
    group = groups.get(("triplet:semihard", large))
    if group is None:
        return Finding("cannot say", f"No `triplet:semihard` run at B = {large}.")
    statuses = ", ".join(f"{n} {s}" for s, n in group.statuses.items())
    if group.statuses.get("oom"):
        return Finding(
            "cannot say", f"Ours ran out of memory too: {statuses}, peak RSS {group.peak_mb:.0f} MB."
        )
    others = [g.peak_mb for (loss, b), g in groups.items() if b == large and loss != "triplet:semihard"]
    return Finding(
        "cannot say",
        f"It is a statement about the article's implementation and machine, which we do not have. "
        f"Ours at B = {large}: {statuses}, peak RSS {group.peak_mb:.0f} MB per run (the most any other "
        f"loss needed at B = {large}: {max(others, default=math.nan):.0f} MB). Our semi-hard miner keeps "
        f"O(B²) memory (no B×B×B tensor), so the out-of-memory failure does not happen here.",
    )


# --- the report ----------------------------------------------------------------------------------


def _pm(stat: Stat) -> str:
    return "n/a" if stat.n == 0 else f"{stat.mean:.4f} ± {stat.sd:.4f}"


def _status_cell(group: Group) -> str:
    bad = "".join(f", {n} {s.upper()}" for s, n in group.statuses.items() if s != "ok")
    return f"{len(group.ok)}/{len(group.runs)} ok{bad}"


def _load_spec(grid: dict[str, Any]) -> GridSpec:
    raw = grid["spec"]
    return GridSpec(**{**raw, "losses": tuple(raw["losses"]), "schedule": tuple(map(tuple, raw["schedule"]))})


def render_report(out: Path) -> Path:
    """Write ``README.md`` and the figures in ``out`` from the recorded runs; return the README path."""
    grid = _read_json(out / GRID_FILE)
    spec = _load_spec(grid)
    runs = load_runs(out)
    groups = group_runs(runs)
    losses = _loss_order({loss for loss, _ in groups})
    batch_sizes = sorted({b for _, b in groups})
    sessions = grid.get("sessions", [])
    machine = sessions[-1]["machine"] if sessions else {}
    total = sum(s["seconds"] for s in sessions)
    run_total = sum(float(r["wall_seconds"]) for r in runs)
    lines = [
        "# Reproduction: contrastive losses compared on real digits",
        "",
        "Generated by `python -m trainer compare` from the runs' own `runs/*/metrics.json` files "
        "(`--report-only` regenerates it); do not edit by hand.",
        "",
        "The seed article (*Contrasting contrastive loss functions*) trains one encoder with each loss, "
        "evaluates it the two-stage way (frozen encoder + linear classifier) against an MLP "
        "cross-entropy baseline, at batch sizes 32, 256 and 2048 paired with learning rates 0.001, "
        "0.01 and 0.2, and shows PCA projections of the embeddings.",
        "",
        "## How it was run",
        "",
        "```",
        spec.command(out),
        "```",
        "",
        *_setup_lines(spec, runs),
        "",
        f"Machine: {machine.get('cpus', '?')} CPU cores ({machine.get('cpu', '?')}), "
        f"{machine.get('memory_gb', '?')} GB RAM, GPU: {machine.get('gpu') or 'none'}; "
        f"torch {machine.get('torch', '?')}, Python {machine.get('python', '?')}. {_jobs_text(sessions)}",
        "",
        f"Total wall time: **{total / 60:.1f} min** over {len(sessions)} invocation(s) "
        f"(the runs' own wall times add up to {run_total / 60:.1f} min). "
        f"Runs: {len(runs)} recorded, {sum(r['status'] == 'ok' for r in runs)} finished.",
        "",
        "## Results",
        "",
        "Test-split accuracy, mean ± sample sd over seeds. *Linear probe*: logistic regression on the frozen "
        "embeddings (the article's two-stage number); *kNN-5*: majority of the 5 nearest training "
        "embeddings by cosine. The first pair of columns is the **best-validation epoch**, the weights the "
        "trainer exports (the model card's metrics); the second pair is the **last epoch**, which is what "
        "the article evaluates. *Wall*: the median over seeds of one run's wall time, process start to exit "
        "(data loading, training, evaluation, export; the median, because other work on a shared machine "
        "can slow a single run down); *peak RSS*: the largest peak resident memory of a run's process.",
        "",
    ]
    for size in batch_sizes:
        lines += [
            f"### B = {size}, lr = {_lr_at(groups, size):g}",
            "",
            "| loss | linear probe | kNN-5 | linear probe, last epoch | kNN-5, last epoch "
            "| wall s / run | peak RSS MB | runs |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for loss in losses:
            group = groups.get((loss, size))
            if group is None:
                continue
            label = f"{loss} (MLP baseline)" if loss == BASELINE else loss
            lines.append(
                f"| {label} | {_pm(group.stat(PROBE))} | {_pm(group.stat(KNN))} | "
                f"{_pm(group.stat(PROBE, 'last'))} | {_pm(group.stat(KNN, 'last'))} | "
                f"{group.median_wall:.1f} | {group.peak_mb:.0f} | {_status_cell(group)} |"
            )
        lines.append("")
    failures = [r for r in runs if r["status"] != "ok"]
    if failures:
        lines += ["Runs that did not finish:", ""]
        for r in failures:
            last_line = ((r.get("error") or "").strip().splitlines() or ["no output"])[-1]
            lines.append(f"- `{r['cell']['name']}`: {r['status']}: {last_line}")
        lines.append("")
    lines += [
        "## The article's findings against our numbers",
        "",
        f"Each verdict is computed from the mean linear-probe accuracies in the tables by the rule it "
        f"states, once for each set of weights. With {spec.seeds} seed{'s' if spec.seeds > 1 else ''}, "
        f"a difference inside the seed-to-seed sd is weak evidence.",
        "",
    ]
    lines += _difference_lines(spec, runs)
    verdicts = {epoch: check_findings(groups, batch_sizes, epoch) for epoch in EPOCHS}
    for i, quote in enumerate(FINDINGS):
        lines += [f"> {quote}", ""]
        for epoch in EPOCHS:
            finding = verdicts[epoch][i]
            if quote == FINDINGS[-1]:  # about memory: the same for both sets of weights
                lines.append(f"**{finding.verdict}**. {finding.evidence}")
                break
            lines.append(f"- *{EPOCH_TEXT[epoch]}*: **{finding.verdict}**. {finding.evidence}")
        lines.append("")
    if runs:
        lines += ["## Figures", ""]
        for name, title in _render_figures(out, groups, losses, batch_sizes):
            lines += [f"![{title}]({name})", ""]
    readme = out / "README.md"
    readme.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return readme


def _jobs_text(sessions: list[dict[str, Any]]) -> str:
    if not sessions:
        return "Not run yet."
    s = sessions[-1]
    return f"Last invocation: {s['jobs']} run(s) at a time, {s['threads_per_run']} torch thread(s) each."


def _setup_lines(spec: GridSpec, runs: list[dict[str, Any]]) -> list[str]:
    """The setup paragraph: where we follow the article, and where our setup differs."""
    finished = [r for r in runs if r["status"] == "ok"]
    data = steps = ""
    if finished:
        d = finished[0]["dataset"]
        data = (
            f" ({d['n_train']} train / {d['n_val']} validation / {d['n_calib']} calibration / "
            f"{d['n_test']} test, our stratified split, drawn anew for each seed)"
        )
        per_batch = {int(r["cell"]["batch_size"]): r["steps_per_epoch"] for r in finished}
        steps = "; steps per epoch: " + ", ".join(f"{n} at B = {b}" for b, n in sorted(per_batch.items()))
    subset = f", a stratified subset of {spec.limit} samples" if spec.limit else ""
    seeds = "seed 0" if spec.seeds == 1 else f"seeds 0–{spec.seeds - 1}"
    return [
        f"Data: `{spec.dataset}`{subset}{data}. Encoder: the article's MLP, 784-256-256 "
        f"(`hidden=[256]`, `embedding_dim=256`, BatchNorm + ReLU); the contrastive losses train through "
        f"our 128-d projection head and the 256-d encoder output is what gets evaluated. "
        f"Every run: {spec.epochs} epochs, no early stopping, no augmentation (as in the article), "
        f"AdamW (weight decay 1e-4) with one warm-up epoch then cosine decay, class-balanced P×K batches "
        f"(K = 8){steps}; {seeds}. `supcon` is the article's supervised NT-Xent, with the article's "
        f"temperature **{spec.temperature:g}** (our trainer's default is 0.1).",
        "",
        f"The `{BASELINE}` baseline is the same MLP trained end to end with cross-entropy through a linear "
        f"classifier head; its row reports the same linear probe on its frozen 256-d encoder output "
        f"(the head itself is not exported), which stands in for the article's MLP baseline accuracy.",
    ]


def _difference_lines(spec: GridSpec, runs: list[dict[str, Any]]) -> list[str]:
    """Where our setup departs from the article's: the first suspects when a verdict disagrees."""
    finished = [r for r in runs if r["status"] == "ok"]
    if not finished:
        return []
    n_train = finished[0]["dataset"]["n_train"]
    largest = max(finished, key=lambda r: r["cell"]["batch_size"])
    b, steps = largest["cell"]["batch_size"], largest["steps_per_epoch"]
    return [
        "Where our setup departs from the article's (the first suspects where a verdict disagrees):",
        "",
        f"- Data: {n_train} training images where the article had MNIST's 60,000, so at B = {b} a run "
        f"takes {steps} steps per epoch, {steps * spec.epochs} in all, where the article's took about "
        f"{60_000 // b} per epoch.",
        "- Batches: class-balanced P×K (K = 8 or more samples of each class in a batch), where the "
        "article describes no class balancing; every anchor has positives, which matters most to the "
        "mining losses (batch-hard on P×K batches is the recipe of Hermans et al. 2017).",
        "- Optimiser: AdamW with one warm-up epoch and cosine decay to 0, which tames lr 0.2 towards "
        "the end of a run; the article's schedule is not stated.",
        "- Weights evaluated: the trainer exports the best-validation epoch; the last-epoch columns and "
        "verdicts follow the article's protocol.",
        "",
    ]


def _render_figures(
    out: Path, groups: Groups, losses: list[str], batch_sizes: list[int]
) -> list[tuple[str, str]]:
    """Accuracy vs batch size per loss, and the PCA grid of last-epoch test embeddings (first seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharey=True, sharex=True)
    for row, epoch in enumerate(EPOCHS):
        for col, (key, title) in enumerate(((PROBE, "linear probe"), (KNN, "kNN-5"))):
            ax = axes[row][col]
            for loss in losses:
                pts = [(b, g.stat(key, epoch)) for b in batch_sizes if (g := _finished(groups, loss, b))]
                if not pts:
                    continue
                style = {"color": "black", "linestyle": "--"} if loss == BASELINE else {}
                ax.errorbar(
                    [b for b, _ in pts],
                    [s.mean for _, s in pts],
                    yerr=[s.sd for _, s in pts],
                    marker="o",
                    capsize=3,
                    label=loss,
                    **style,
                )
            ax.set_xscale("log", base=2)
            ax.set_xticks(batch_sizes, [f"{b}\nlr {_lr_at(groups, b):g}" for b in batch_sizes])
            ax.set_title(f"{title}, {EPOCH_TEXT[epoch]}")
            ax.grid(alpha=0.3)
        axes[row][0].set_ylabel("test accuracy (mean ± sd)")
    for ax in axes[1]:
        ax.set_xlabel("batch size (paired lr)")
    if axes[0][1].get_legend_handles_labels()[0]:
        axes[0][1].legend(fontsize="small", loc="best")
    fig.savefig(out / "accuracy_vs_batch_size.png", dpi=90, bbox_inches="tight")
    plt.close(fig)

    fig, axes = plt.subplots(
        len(batch_sizes), len(losses), figsize=(2.2 * len(losses), 2.2 * len(batch_sizes)), squeeze=False
    )
    cmap = plt.get_cmap("tab10")
    handles: list[Any] = []
    for row, size in enumerate(batch_sizes):
        for col, loss in enumerate(losses):
            ax = axes[row][col]
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(loss, fontsize="medium")
            if col == 0:
                ax.set_ylabel(f"B = {size}")
            group = _finished(groups, loss, size)
            first = min(group.ok, key=lambda r: r["cell"]["seed"]) if group else None
            path = out / RUNS_DIR / first["cell"]["name"] / PCA_FILE if first else None
            if first is None or path is None or not path.exists():
                ax.text(0.5, 0.5, "no run" if (loss, size) not in groups else "failed", ha="center")
                continue
            with np.load(path) as pca:
                points, labels, names = pca["points"].astype(np.float32), pca["labels"], pca["label_names"]
            for code in np.unique(labels):
                mask = labels == code
                ax.scatter(
                    points[mask, 0], points[mask, 1], s=1, color=cmap(int(code) % 10), label=names[code]
                )
            ax.text(0.02, 0.02, f"probe {first['last_epoch'][PROBE]:.3f}", transform=ax.transAxes, fontsize=8)
            if not handles and len(names) <= 10:
                handles = list(ax.get_legend_handles_labels())
    if handles:
        fig.legend(
            *handles, loc="upper center", ncol=len(handles[0]), markerscale=8, bbox_to_anchor=(0.5, 1.0)
        )
    fig.suptitle("PCA of the test embeddings after the last epoch (first seed)", y=1.05)
    fig.savefig(out / "pca.png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return [
        ("accuracy_vs_batch_size.png", "test accuracy vs batch size per loss"),
        ("pca.png", "2-D PCA projections of the last-epoch test embeddings per loss and batch size"),
    ]


def _child_main(argv: Sequence[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    if len(argv) != 1:
        print(
            "usage: python -m trainer.compare CELL_DIR (run by `python -m trainer compare`)", file=sys.stderr
        )
        return 2
    run_cell(Path(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
