"""Settings: flags (``--data-dir``) and environment variables (``EMBED_DATA_DIR``), one name for both.

Three layers, so no process re-declares another's settings: ``StoreSettings`` (where the data lives:
every process), ``WorkerSettings`` (the training worker, ``python -m service worker``) and ``Settings``
(the API server, which also supervises a worker and so takes the worker's settings too).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.paths import DataDir

IndexType = Literal["auto", "flat", "hnsw", "ivf"]
SqliteSync = Literal["full", "normal"]
LogLevel = Literal["debug", "info", "warning", "error"]


class StoreSettings(BaseSettings):
    """The data directory and database every process of the service shares."""

    model_config = SettingsConfigDict(
        env_prefix="EMBED_",
        cli_kebab_case=True,
        cli_implicit_flags=True,
        cli_hide_none_type=True,
        cli_avoid_json=True,
        extra="ignore",
    )

    data_dir: Path = Field(
        Path("data"),
        description="Holds service.db, data sets (datasets/), models (models/) and index snapshots (index/).",
    )
    database_url: str | None = Field(
        None, description="Any SQLAlchemy URL; default sqlite:///DATA_DIR/service.db."
    )
    sqlite_synchronous: SqliteSync = Field(
        "full", description="SQLite synchronous pragma (WAL mode): full survives power loss, normal a crash."
    )
    log_level: LogLevel = Field("info", description="Log level.")

    @field_validator("database_url", mode="before")
    @classmethod
    def _empty_url_is_unset(cls, value: object) -> object:
        # compose files pass unset variables as "": that must mean "the default database"
        return None if value == "" else value

    @property
    def paths(self) -> DataDir:
        return DataDir(self.data_dir)

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.paths.db_file.resolve()}"


class WorkerSettings(StoreSettings):
    """The training worker: `python -m service worker [--once]` (--once: exit when the queue is empty).
    The server runs one itself unless --no-worker."""

    model_config = SettingsConfigDict(cli_prog_name="python -m service worker")

    worker_device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Device of the training worker for jobs whose config says auto."
    )
    worker_poll_interval: float = Field(1.0, gt=0, description="Seconds between job-queue polls when idle.")
    worker_heartbeat_interval: float = Field(
        2.0, gt=0, description="Seconds between a running job's heartbeats."
    )
    job_stale_after: float = Field(
        60.0, gt=0, description="A running job whose heartbeat is older is re-queued (or failed)."
    )
    job_max_attempts: int = Field(3, ge=1, description="Runs of one job (resumed each time) before it fails.")


class Settings(WorkerSettings):
    """Embedding service. Every flag is also an environment variable: --data-dir is EMBED_DATA_DIR."""

    model_config = SettingsConfigDict(cli_prog_name="python -m service")

    host: str = Field("127.0.0.1", description="Interface to bind.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port to listen on.")
    model: Path | None = Field(
        None, description="An exported model directory to register (copied under data-dir) and activate."
    )
    api_key: SecretStr | None = Field(
        None, description="When set, every route but /health and /ready needs 'Authorization: Bearer KEY'."
    )

    index_type: IndexType = Field(
        "auto",
        description="FAISS index: auto (exact while small, IVF past --auto-index-threshold), flat (always "
        "exact), hnsw or ivf (approximate).",
    )
    auto_index_threshold: int = Field(
        50_000, ge=1, description="auto: vectors at which a collection's index turns from exact to IVF."
    )
    recall_target: float = Field(
        0.97, gt=0, le=1, description="IVF: nprobe is tuned until sampled recall@10 reaches this."
    )
    hnsw_m: int = Field(32, ge=4, description="HNSW graph degree.")
    hnsw_ef_search: int = Field(64, ge=1, description="HNSW search breadth (raised to k when smaller).")
    ivf_nlist: int = Field(0, ge=0, description="IVF cells (0: about 4*sqrt(n), retrained at 4x growth).")
    ivf_nprobe: int = Field(0, ge=0, description="IVF cells visited per search (0: tuned, --recall-target).")
    snapshot_interval: float = Field(
        30.0, ge=0, description="Seconds between index snapshots (0: only at shutdown)."
    )
    sync_interval: float = Field(
        0.0,
        ge=0,
        description="Seconds between catch-ups with other API replicas on the same database (0: off).",
    )
    removal_retention: float = Field(
        3600.0,
        gt=0,
        description="Seconds deletions stay in the log replicas follow; one further behind resyncs in full.",
    )
    gate_tolerance: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Promotion gate: refuse a model worse than the active one by more than this "
        "(kNN accuracy or MAP@R on the collection's labelled items).",
    )
    gate_sample: int = Field(
        2000, ge=10, description="Promotion gate: labelled items compared (a fixed, seeded sample)."
    )
    max_batch_size: int = Field(64, ge=1, description="Most items per encoder call (micro-batching).")
    max_wait_ms: float = Field(2.0, ge=0, description="How long a batch waits for more requests when idle.")
    max_queue: int = Field(
        4096,
        ge=1,
        description="Most items waiting for the encoder; beyond it requests get 429 (one always fits).",
    )
    torch_threads: int | None = Field(
        None,
        ge=1,
        description="torch.set_num_threads; default: usable cores - 1 (the event loop needs one), max 8.",
    )
    max_items: int = Field(1024, ge=1, description="Most items per request.")
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="Largest request body (413 beyond).")
    max_k: int = Field(1000, ge=1, description="Largest k for /search and /classify.")
    max_import_items: int = Field(
        200_000, ge=1, description="Most rows in one bulk import (POST .../items/import, a .npz)."
    )
    row_cache_items: int = Field(
        200_000, ge=0, description="Item ids and labels kept in memory for /classify (0: none)."
    )
    max_upload_bytes: int = Field(
        256 * 1024 * 1024, ge=1024, description="Largest data set upload to POST /datasets (413 beyond)."
    )
    worker: bool = Field(
        True,
        description="Run one training worker subprocess (restarted if it dies); --no-worker: run it apart.",
    )
    access_log: bool = Field(False, description="Log every request (uvicorn access log; costs throughput).")

    @field_validator("model", "api_key", "torch_threads", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # compose files pass unset variables as "": that must mean "no API key", not an empty one
        return None if value == "" else value

    @property
    def resolved_torch_threads(self) -> int:
        # Intra-op threads that find no free core stall at every barrier; leave one core to the event loop.
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return self.torch_threads or max(1, min(8, cores - 1))
