"""Training-job housekeeping inside the service process.

- ``WorkerSupervisor`` runs ``python -m service worker`` as a child process (unless
  ``--no-worker``) and restarts it when it dies, first handing the dead worker's running job
  back to the queue so the new worker resumes it from its checkpoint.
- ``maintain_jobs`` runs every second: it re-queues (or fails) jobs whose heartbeat went stale,
  which covers workers in other processes or containers, and activates the models of finished
  jobs that asked for it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from sqlalchemy import select

from service import jobs
from service.config import Settings
from service.errors import ErrorCode, ServiceError
from service.registry import active_model_id, record_failed_activation, register_model_dir, start_activation
from service.state import ServiceState
from service.store import JobRow

logger = logging.getLogger(__name__)
RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)
PR_SET_PDEATHSIG = 1


class WorkerSupervisor:
    """Keeps one worker subprocess alive for as long as the service runs."""

    def __init__(self, settings: Settings, state: ServiceState) -> None:
        self.settings, self.state = settings, state
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.spawned_at = 0.0
        self._lock = threading.Lock()  # spawn and stop never interleave: no orphan worker
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="worker-supervisor", daemon=True)

    def command(self) -> list[str]:
        s = self.settings
        return [
            sys.executable, "-m", "service", "worker",
            "--data-dir", str(Path(s.data_dir).resolve()),
            "--worker-device", s.worker_device,
            "--worker-heartbeat-interval", str(s.worker_heartbeat_interval),
            "--job-stale-after", str(s.job_stale_after),
            "--job-max-attempts", str(s.job_max_attempts),
            "--log-level", s.log_level,
        ]  # fmt: skip

    def start(self) -> None:
        with self._lock:
            self._spawn()
        self._thread.start()

    def _spawn(self) -> None:
        # The database URL may hold a password: pass it in the environment, not on the command line.
        env = {**os.environ, "EMBED_DATABASE_URL": self.settings.db_url}
        self.proc = subprocess.Popen(self.command(), env=env, preexec_fn=_die_with_parent)  # noqa: PLW1509
        self.spawned_at = time.monotonic()
        logger.info("started training worker (pid %d)", self.proc.pid)

    @property
    def worker_id(self) -> str | None:
        return f"{socket.gethostname()}:{self.proc.pid}" if self.proc else None

    def _watch(self) -> None:
        while not self._stopping.is_set():
            proc = self.proc
            assert proc is not None
            code = proc.wait()
            lived = time.monotonic() - self.spawned_at
            if self._stopping.is_set():
                return
            try:
                reason = f"worker {self.worker_id} exited with status {code}"
                logger.warning("%s; restarting it", reason)
                jobs.release_worker(
                    self.state.sessions, self.worker_id or "", reason, self.settings.job_max_attempts
                )
            except Exception:  # noqa: BLE001 - the stale-job reaper catches what this missed
                logger.exception("could not release the dead worker's job")
            self.restarts = self.restarts + 1 if lived < 60 else 0  # back off only while it crash-loops
            delay = RESTART_BACKOFF_S[min(self.restarts, len(RESTART_BACKOFF_S)) - 1]
            if self._stopping.wait(delay):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                try:
                    self._spawn()
                except OSError:
                    logger.exception("could not start the training worker; retrying")
                    self.proc = proc  # keep watching the dead one: wait() returns at once, backoff grows

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM: the worker hands its running job back to the queue and exits."""
        with self._lock:
            self._stopping.set()
            proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("worker did not stop in %.0f s; killing it", timeout)
                proc.kill()
                proc.wait()
        if self._thread.is_alive():
            self._thread.join(timeout)


def _die_with_parent() -> None:
    """Linux: the worker gets SIGTERM if the service dies (even by kill -9), so none is orphaned."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: the stale-heartbeat reaper still recovers the worker's job


def maintain_jobs(state: ServiceState) -> None:
    """One housekeeping pass (blocking; the app runs it in a thread every second)."""
    s = state.settings
    jobs.reap_stale(state.sessions, s.job_stale_after, s.job_max_attempts)
    _follow_activations(state)
    _remove_finished_run_dirs(state)


def _remove_finished_run_dirs(state: ServiceState) -> None:
    """Checkpoints of jobs that ended (failed or cancelled while no worker held them) are garbage."""
    runs = state.settings.paths.runs
    if not runs.is_dir():
        return
    names = [p.name for p in runs.iterdir() if p.is_dir()]
    if not names:
        return
    with state.session() as session:
        finished = set(
            session.scalars(
                select(JobRow.id).where(JobRow.id.in_(names), JobRow.status.in_(jobs.TERMINAL))
            ).all()
        )
    for name in finished:
        shutil.rmtree(runs / name, ignore_errors=True)


def _set_activation(state: ServiceState, job_id: str, value: str) -> None:
    with state.session() as session:
        job = session.scalars(select(JobRow).where(JobRow.id == job_id)).one()
        job.activation = value[:1000]
        session.commit()


def _follow_activations(state: ServiceState) -> None:
    with state.session() as session:
        waiting = session.execute(
            select(JobRow.id, JobRow.model_id, JobRow.activation)
            .where(JobRow.status == jobs.SUCCEEDED, JobRow.activation.in_(["pending", "activating"]))
            .order_by(JobRow.seq)
        ).all()
    for job_id, model_id, activation in waiting:
        if activation == "activating":
            progress = (
                state.activation if state.activation and state.activation["model_id"] == model_id else None
            )
            if progress is None:  # the service restarted mid-activation: look at what is active
                _set_activation(state, job_id, "active" if active_model_id(state) == model_id else "pending")
            elif progress["status"] == "done":
                _set_activation(state, job_id, "active")
            elif progress["status"] == "failed":
                _set_activation(state, job_id, f"failed: {progress['error']}")
            continue
        if state.activation_mutex.locked():
            return  # another activation runs; try again next pass
        try:
            register_model_dir(state, state.settings.paths.models / model_id)  # checks the worker's files
            status = start_activation(state, model_id)
        except ServiceError as exc:
            if exc.code is ErrorCode.CONFLICT and state.activation_mutex.locked():
                return  # a user's activation started in between; try again next pass
            _set_activation(state, job_id, f"failed: {exc.detail}")
            record_failed_activation(state, model_id, exc.detail)
            continue
        except Exception as exc:  # noqa: BLE001 - an unusable model must not stop housekeeping
            _set_activation(state, job_id, f"failed: {exc}")
            record_failed_activation(state, model_id, str(exc))
            continue
        _set_activation(state, job_id, "active" if status == "active" else "activating")
        logger.info("job %s: activating model %s", job_id, model_id)


def run_maintenance_loop(state: ServiceState, stop: threading.Event, interval: float = 1.0) -> None:
    """Thread body: ``maintain_jobs`` every ``interval`` seconds until ``stop`` is set."""
    while not stop.wait(interval):
        started = time.monotonic()
        try:
            maintain_jobs(state)
        except Exception:  # noqa: BLE001 - keep going; the database is the source of truth
            logger.exception("job housekeeping failed")
        if time.monotonic() - started > 5:
            logger.warning("job housekeeping took %.1f s", time.monotonic() - started)
