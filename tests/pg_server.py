"""A throwaway PostgreSQL server for the tests: Debian's ``postgresql`` binaries, a cluster in a temp dir.

``initdb`` makes the cluster; the ``postgres`` server then runs as a child of the test process (not
daemonised by ``pg_ctl``) with a parent-death signal, so it goes away with the test run however that
ends: teardown, an exception, ``os._exit`` from a timeout, or a ``kill -9`` of pytest. PostgreSQL
refuses to run as root, and tests and CI run as root: then the server runs as the ``postgres`` system
user that Debian's package creates, and the temp dir belongs to it.

Durability settings are off (``fsync``, ``synchronous_commit``, ``full_page_writes``): the tests kill
our processes, never the database server, and the cluster is deleted afterwards.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from itertools import count
from pathlib import Path

import psycopg

INSTALL_HINT = (
    "PostgreSQL's server binaries are needed for the PostgreSQL half of the store, queue, sync and "
    "durability tests: install Debian's package with `apt-get install -y --no-install-recommends "
    "postgresql` (.ci/run does this on a fresh machine)"
)
PR_SET_PDEATHSIG = 1
PASSWORD = "pw-never-shown"


def find_bin_dir() -> Path:
    """The newest ``/usr/lib/postgresql/<major>/bin`` holding initdb and postgres (no version hard-coded)."""
    candidates = []
    for bin_dir in Path("/usr/lib/postgresql").glob("*/bin"):
        major = bin_dir.parent.name
        if major.isdigit() and (bin_dir / "initdb").exists() and (bin_dir / "postgres").exists():
            candidates.append((int(major), bin_dir))
    if not candidates:
        found = shutil.which("initdb")  # another layout with the binaries on PATH
        if found and shutil.which("postgres"):
            return Path(found).parent
        raise RuntimeError(f"no PostgreSQL server found under /usr/lib/postgresql/*/bin. {INSTALL_HINT}")
    return max(candidates)[1]


def _die_with_parent() -> None:
    # Runs in the child after its user switch (which would clear the setting): SIGQUIT is an
    # immediate shutdown of the postmaster and its backends when the test process dies.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGQUIT)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """One cluster on 127.0.0.1 and a free port; ``new_database()`` hands out isolated databases."""

    def __init__(self) -> None:
        self.bin_dir = find_bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="pytest-postgres-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._names = count()
        self._user: dict[str, object] = {}
        if os.geteuid() == 0:
            try:
                pg = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError(f"root, and no 'postgres' user exists. {INSTALL_HINT}") from None
            os.chown(self.root, pg.pw_uid, pg.pw_gid)
            self._user = {"user": pg.pw_uid, "group": pg.pw_gid, "extra_groups": []}
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    @property
    def admin_dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def url(self, database: str) -> str:
        """The SQLAlchemy URL; trust authentication ignores its password, which is there so that tests
        can check that no log or answer shows it."""
        return f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def _run(self, *cmd: str) -> None:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=self.root, timeout=120, **self._user)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")

    def _start(self) -> None:
        self._run(
            str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", "postgres",
            "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        for _ in range(5):  # another process can take the free port between the probe and the bind
            self.port = _free_port()
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(
                    [
                        str(self.bin_dir / "postgres"),
                        "-D",
                        str(self.data),
                        "-p",
                        str(self.port),
                        "-c",
                        "listen_addresses=127.0.0.1",
                        "-c",
                        f"unix_socket_directories={self.root}",
                        "-c",
                        "max_connections=300",
                        "-c",
                        "fsync=off",
                        "-c",
                        "synchronous_commit=off",
                        "-c",
                        "full_page_writes=off",
                    ],  # fmt: skip
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.root,
                    preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads have started here yet
                    **self._user,
                )
            if self._wait_ready():
                return
            if not re.search(r"could not bind|Address already in use", self.log.read_text()):
                break
        raise RuntimeError(f"PostgreSQL did not start:\n{self.log.read_text()[-3000:]}")

    def _wait_ready(self, timeout: float = 60.0) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with psycopg.connect(self.admin_dsn, connect_timeout=2):
                    return True
            except psycopg.OperationalError:
                time.sleep(0.05)
        return False

    def new_database(self) -> str:
        """A fresh, empty database (from template1: a file copy, a few ms); returns its name."""
        name = f"test_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        """FORCE ends connections a test left behind (a killed server's, a pool not yet disposed)."""
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Immediate shutdown (SIGQUIT: no checkpoint, the cluster is thrown away), then remove the
        cluster; safe to call twice."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)
