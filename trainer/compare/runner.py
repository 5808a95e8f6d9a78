"""The parent side: run every cell not yet done as a child process, record each outcome, render the report."""

from __future__ import annotations

import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from trainer.compare.grid import (
    CELL_FILE,
    CHILD_RESULT,
    GRID_FILE,
    LOG_FILE,
    METRICS_FILE,
    RUNS_DIR,
    Cell,
    CompareError,
    GridSpec,
    cell_config,
    open_grid,
    read_json,
    write_json,
)
from trainer.compare.report import render_report
from trainer.compare.results import KNN, PROBE

log = logging.getLogger(__name__)


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
    grid = open_grid(spec, out)
    write_json(out / GRID_FILE, grid)

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
        write_json(out / GRID_FILE, grid)
    report = render_report(out)
    return RunSummary(ran, len(cells) - len(todo), failed, grid["sessions"][-1]["seconds"], report)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _needs_run(cell_dir: Path, retry_failed: bool) -> bool:
    path = cell_dir / METRICS_FILE
    if not path.exists():
        return True
    return retry_failed and read_json(path).get("status") != "ok"


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
        write_json(
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
            record.update(read_json(result_path))
            result_path.unlink()
            log_path.unlink(missing_ok=True)
        else:
            record["status"], record["error"] = _failure(exit_code, timed_out, log_path, self.timeout)
        write_json(cell_dir / METRICS_FILE, record)
        (cell_dir / CELL_FILE).unlink(missing_ok=True)
        return record

    def _spawn(self, cell_dir: Path) -> tuple[int, Any, float, bool]:
        """Run the child; return its exit code (−signal if killed), its rusage, wall seconds, timed out."""
        package_root = str(Path(__file__).resolve().parents[2])
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
