"""``WorkerSupervisor``: the server runs ``python -m service worker`` as a child process (unless
``--no-worker``) and restarts it when it dies, first handing the dead worker's running job back to the
queue so the new worker resumes it from its checkpoint.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from service import jobs
from service.config import Settings
from service.db import Database

logger = logging.getLogger(__name__)
RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)
PR_SET_PDEATHSIG = 1


class WorkerSupervisor:
    """Keeps one worker subprocess alive for as long as the service runs."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings, self.db = settings, db
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
                    self.db.sessions, self.worker_id or "", reason, self.settings.job_max_attempts
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
