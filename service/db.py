"""The database handle every part of the service shares: an engine and its sessions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from service.migrations import upgrade
from service.tables import open_db


class Database:
    """One engine per process; ``session()`` opens a short-lived session (no I/O until a query runs)."""

    def __init__(self, url: str, sqlite_synchronous: str = "full") -> None:
        self.engine: Engine
        self.sessions: sessionmaker[Session]
        self.engine, self.sessions = open_db(url, sqlite_synchronous)
        upgrade(self.engine)  # a database written by an earlier version
        self.dialect = self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.sessions() as session:
            yield session

    def describe(self) -> str:
        """The URL without its password, for logs."""
        return make_url(str(self.engine.url)).render_as_string(hide_password=True)

    def dispose(self) -> None:
        self.engine.dispose()
