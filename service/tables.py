"""The service's tables and engine (one declarative Base): models, collections, items and their embeddings,
removals (for replicas), activation history, training jobs, uploaded data sets.

Durability choice for SQLite: WAL journal with ``synchronous=FULL`` by default. WAL alone (even with
``NORMAL``) survives a killed process, because a commit has reached the OS before it returns; FULL also
fsyncs the WAL on every commit, so an acknowledged item survives power loss or a kernel crash too. The
cost is one fsync per write request (items are written a request at a time, so it is amortised over the
batch); ``--sqlite-synchronous normal`` trades that guarantee for throughput.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
    text,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Timestamps stored in UTC and read back timezone-aware (SQLite drops the zone; PostgreSQL keeps it),
    so every answer carries ISO 8601 with its offset."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None  # PostgreSQL answers in its session's zone: one form for the API, UTC
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """One Base for every table of the service database."""


class ModelRow(Base):
    """A registered model directory. Which collections it serves is on ``CollectionRow``."""

    __tablename__ = "models"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    path: Mapped[str] = mapped_column(String(4096))
    card: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class CollectionRow(Base):
    """A named set of items with its own active model (``model_id``) and index.

    ``previous_model_id`` is the model a rollback returns to (its embeddings and snapshot are kept until
    the next activation). Every write to the collection's items first bumps ``writes`` in its own
    transaction, conditioned on ``model_id``: that row is where writers and an activation serialise, on
    SQLite and PostgreSQL alike (see ``service.items``). ``removed_floor`` is the newest pruned
    ``RemovalRow.seq``: a replica that has not read that far catches up by a full comparison instead.
    """

    __tablename__ = "collections"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_id: Mapped[str | None] = mapped_column(ForeignKey("models.id"), default=None)
    previous_model_id: Mapped[str | None] = mapped_column(ForeignKey("models.id"), default=None)
    activated_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    writes: Mapped[int] = mapped_column(BigInteger, default=0)
    removed_floor: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class ItemRow(Base):
    """A stored item: its original input (to re-embed it under a new model), label and metadata.

    ``key`` is the FAISS id. AUTOINCREMENT matters: SQLite would otherwise reuse the key of a deleted
    last row, and a stale snapshot could then pair that key with the old vector; PostgreSQL's sequence
    never hands a value out twice (BIGINT there: every insert and upsert takes a new key). Keys also grow
    in commit order within a collection (writers serialise on the collection row), which lets replicas
    find new rows by ``key > watermark``.
    """

    __tablename__ = "items"
    __table_args__ = (
        UniqueConstraint("collection", "id", name="uq_items_collection_id"),
        Index("ix_items_collection_label", "collection", "label"),  # (key ranges use the primary key)
        {"sqlite_autoincrement": True},
    )

    key: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    collection: Mapped[str] = mapped_column(ForeignKey("collections.name", ondelete="CASCADE"))
    id: Mapped[str] = mapped_column(String(256))
    label: Mapped[str | None] = mapped_column(String(256), default=None)
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON, default=None)
    input_kind: Mapped[str] = mapped_column(String(16))  # "vector" (float32 bytes) or "image" (file bytes)
    input_dim: Mapped[int | None] = mapped_column(default=None)  # vector length, for compatibility checks
    input_data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class EmbeddingRow(Base):
    """An item's embedding under one model: the collection's active model and, until the next activation,
    the previous one (so a rollback re-embeds only what was added since)."""

    __tablename__ = "embeddings"

    key: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("items.key", ondelete="CASCADE"),
        primary_key=True,
    )
    model_id: Mapped[str] = mapped_column(String(128), primary_key=True)  # reached by key: no second index
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # float32


class RemovalRow(Base):
    """A deleted item key, so other replicas drop it from their index in O(changes) (pruned over time)."""

    __tablename__ = "removals"
    __table_args__ = (
        Index("ix_removals_collection_seq", "collection", "seq"),
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    collection: Mapped[str] = mapped_column(String(64))
    key: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class ActivationRow(Base):
    """One activation or rollback of a collection: who asked, what the promotion gate found, the outcome."""

    __tablename__ = "activations"
    __table_args__ = (Index("ix_activations_collection", "collection", "seq"), {"sqlite_autoincrement": True})

    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    collection: Mapped[str] = mapped_column(String(64))
    model_id: Mapped[str] = mapped_column(String(128))
    previous_model_id: Mapped[str | None] = mapped_column(String(128), default=None)
    kind: Mapped[str] = mapped_column(String(16))  # activation | rollback
    requested_by: Mapped[str] = mapped_column(String(128))  # "request", "job <id>", "start-up"
    status: Mapped[str] = mapped_column(String(16))  # see service.activation.ActivationStatus
    gate: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    done: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int | None] = mapped_column(Integer, default=None)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)


class JobRow(Base):
    """A training job: queued by ``POST /train``, claimed and run by a worker process.

    ``seq`` orders the queue (oldest first). ``heartbeat_at`` is refreshed by the worker while it
    runs the job; a job whose heartbeat goes stale is re-queued (resumed from its checkpoint) or
    failed. ``activation`` follows the new model after success when ``activate`` was asked.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        # One pending job per model id, enforced by the database so concurrent POST /train cannot race.
        Index(
            "uq_jobs_pending_model",
            "model_id",
            unique=True,
            sqlite_where=text("status IN ('queued', 'running')"),
            postgresql_where=text("status IN ('queued', 'running')"),
        ),
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16), index=True, default="queued")
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    dataset_spec: Mapped[str] = mapped_column(String(4096))  # resolved: built-in, path under data dir, items
    test_dataset_spec: Mapped[str | None] = mapped_column(String(4096), default=None)  # resolved likewise
    model_id: Mapped[str] = mapped_column(String(128))  # fixed at submission: a resumed run finds its files
    collection: Mapped[str] = mapped_column(String(64), default="default")  # where activate puts the model
    activate: Mapped[bool] = mapped_column(Boolean, default=False)
    force: Mapped[bool] = mapped_column(Boolean, default=False)  # activate without the promotion gate
    activation: Mapped[str | None] = mapped_column(String(1024), default=None)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    worker_id: Mapped[str | None] = mapped_column(String(256), default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)  # one record per epoch
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)  # final test metrics
    log: Mapped[str] = mapped_column(Text, default="")  # the last lines of the run's log
    error: Mapped[str | None] = mapped_column(Text, default=None)


class DatasetRow(Base):
    """A data set uploaded with ``POST /datasets``, stored as ``<data-dir>/datasets/<id><ext>``."""

    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    filename: Mapped[str] = mapped_column(String(256))  # the stored file's name under datasets/
    original_name: Mapped[str] = mapped_column(String(256))
    n: Mapped[int] = mapped_column(Integer)
    classes: Mapped[list[str]] = mapped_column(JSON)
    shape: Mapped[list[int]] = mapped_column(JSON)  # one sample's shape
    size_bytes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


# Connections per process: the request thread pool (40 threads) may each hold a session, plus the
# background threads (snapshots, job housekeeping, replica sync). A PostgreSQL server must allow
# (replicas + workers) x (POOL_SIZE + MAX_OVERFLOW) of them in the worst case (its default is 100).
POOL_SIZE, MAX_OVERFLOW = 8, 32


def make_engine(url: str, sqlite_synchronous: str = "full") -> Engine:
    """Create the engine; SQLite gets WAL, a busy timeout and the chosen synchronous level."""
    if not url.startswith("sqlite"):
        # pre-ping: a connection the server or a proxy closed while idle is replaced, not handed out
        return create_engine(url, pool_pre_ping=True, pool_size=POOL_SIZE, max_overflow=MAX_OVERFLOW)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=POOL_SIZE,
        max_overflow=MAX_OVERFLOW,
    )

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={sqlite_synchronous.upper()}")
        cursor.execute("PRAGMA cache_size=-65536")  # 64 MiB of pages: big index inserts stay in memory
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine


def open_db(url: str, sqlite_synchronous: str = "full") -> tuple[Engine, sessionmaker[Any]]:
    """Create tables if needed and return the engine and a session factory."""
    engine = make_engine(url, sqlite_synchronous)
    create_tables(engine)
    return engine, sessionmaker(engine, expire_on_commit=False)


def create_tables(engine: Engine, attempts: int = 10) -> None:
    """``create_all``, safe when several processes start on a fresh database at once (the service and
    the trainer containers do): each checks for a table, then creates it, so all but one of them can
    find it created in between. That error means another process did the work; look again. (A brand-new
    SQLite file can also refuse the switch to WAL while another process makes it: "database is locked".)"""
    for attempt in range(attempts):
        try:
            Base.metadata.create_all(engine)
            return
        except DBAPIError as exc:
            retry = any(words in str(exc.orig) for words in ("already exists", "database is locked"))
            if not retry or attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
