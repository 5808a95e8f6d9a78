"""Service settings: one pydantic-settings class, from flags (``--data-dir``) and env (``EMBED_DATA_DIR``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

IndexType = Literal["flat", "hnsw", "ivf"]
SqliteSync = Literal["full", "normal"]


class Settings(BaseSettings):
    """Embedding service. Every flag is also an environment variable: --data-dir is EMBED_DATA_DIR."""

    model_config = SettingsConfigDict(
        env_prefix="EMBED_",
        cli_kebab_case=True,
        cli_prog_name="python -m service",
        cli_implicit_flags=True,
        cli_hide_none_type=True,
        cli_avoid_json=True,
        extra="ignore",
    )

    host: str = Field("127.0.0.1", description="Interface to bind.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port to listen on.")
    data_dir: Path = Field(
        Path("data"),
        description="Holds service.db, registered models (models/) and index snapshots (index/).",
    )
    model: Path | None = Field(
        None, description="An exported model directory to register (copied under data-dir) and activate."
    )
    api_key: SecretStr | None = Field(
        None, description="When set, every route but /health and /ready needs 'Authorization: Bearer KEY'."
    )
    database_url: str | None = Field(
        None, description="Any SQLAlchemy URL; default sqlite:///DATA_DIR/service.db."
    )
    sqlite_synchronous: SqliteSync = Field(
        "full", description="SQLite synchronous pragma (WAL mode): full survives power loss, normal a crash."
    )
    index_type: IndexType = Field("flat", description="FAISS index: flat (exact), hnsw or ivf (approximate).")
    hnsw_m: int = Field(32, ge=4, description="HNSW graph degree.")
    hnsw_ef_search: int = Field(64, ge=1, description="HNSW search breadth (raised to k when smaller).")
    ivf_nlist: int = Field(256, ge=1, description="IVF cells; trained once 39*nlist vectors exist.")
    ivf_nprobe: int = Field(16, ge=1, description="IVF cells visited per search.")
    snapshot_interval: float = Field(
        30.0, ge=0, description="Seconds between index snapshots (0: only at shutdown)."
    )
    sync_interval: float = Field(
        0.0,
        ge=0,
        description="Seconds between catch-ups with other API replicas on the same database (0: off).",
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
    worker_device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Device of the worker subprocess for jobs whose config says auto."
    )
    worker_heartbeat_interval: float = Field(
        2.0, gt=0, description="Seconds between a running job's heartbeats."
    )
    job_stale_after: float = Field(
        60.0, gt=0, description="A running job whose heartbeat is older is re-queued (or failed)."
    )
    job_max_attempts: int = Field(3, ge=1, description="Runs of one job (resumed each time) before it fails.")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    access_log: bool = Field(False, description="Log every request (uvicorn access log; costs throughput).")

    @field_validator("model", "api_key", "database_url", "torch_threads", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # compose files pass unset variables as "": that must mean "no API key", not an empty one
        return None if value == "" else value

    @property
    def resolved_torch_threads(self) -> int:
        # Intra-op threads that find no free core stall at every barrier; leave one core to the event loop.
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return self.torch_threads or max(1, min(8, cores - 1))

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'service.db').resolve()}"

    @property
    def datasets_dir(self) -> Path:
        return self.data_dir / "datasets"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "index"
