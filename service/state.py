"""What a running app holds: settings, database, batcher, metrics and the active model + index.

``runtime`` (encoder and index of the active model) is swapped as one attribute, so a request that
captured it sees one consistent model. ``lock`` is the readers-writer lock around the index: searches
share it; item writes, deletes and the activation swap take it exclusively. A write whose embeddings
came from a model that was swapped out meanwhile raises ``ModelChanged`` and is redone.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from service.batcher import MicroBatcher
from service.config import Settings
from service.encoder import Encoder
from service.errors import ErrorCode, ModelChanged, ServiceError, no_model
from service.index import IndexParams, RWLock, VectorIndex
from service.metrics import Metrics
from service.rowcache import RowCache
from service.schemas import RawInput

logger = logging.getLogger(__name__)
T = TypeVar("T")
MODEL_CHANGE_RETRIES = 3


@dataclass(eq=False)
class Runtime:
    """The active model and the index its embeddings fill; replaced as a whole on activation."""

    encoder: Encoder
    index: VectorIndex
    snapshot_version: int = -1  # index.version at the last snapshot

    @property
    def model_id(self) -> str:
        return self.encoder.model_id


@dataclass(eq=False)
class ServiceState:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    batcher: MicroBatcher
    metrics: Metrics
    runtime: Runtime | None = None
    lock: RWLock = field(default_factory=RWLock)
    snapshot_mutex: threading.Lock = field(default_factory=threading.Lock)
    activation_mutex: threading.Lock = field(default_factory=threading.Lock)
    activation: dict[str, Any] | None = None  # progress of the last background activation
    rows: RowCache = field(init=False)  # key -> (id, label), see service.rowcache

    def __post_init__(self) -> None:
        self.rows = RowCache(self.settings.row_cache_items)

    @property
    def index_params(self) -> IndexParams:
        s = self.settings
        return IndexParams(s.index_type, s.hnsw_m, s.hnsw_ef_search, s.ivf_nlist, s.ivf_nprobe)

    def require_runtime(self) -> Runtime:
        runtime = self.runtime
        if runtime is None:
            raise no_model()
        return runtime

    def check_current(self, runtime: Runtime) -> None:
        """Call under ``lock``: the work was done for ``runtime``, is it still the active one?"""
        if self.runtime is not runtime:
            raise ModelChanged

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.sessions() as session:
            yield session

    async def embed(self, runtime: Runtime, raws: list[RawInput]) -> np.ndarray:
        """Decode (images off the event loop) and embed through the micro-batcher."""
        if any(isinstance(r, bytes) for r in raws):
            batch = await run_in_threadpool(runtime.encoder.decode, raws)
        else:
            batch = runtime.encoder.decode(raws)
        emb = await self.batcher.embed(runtime.encoder, batch)
        bad = np.flatnonzero(~np.isfinite(emb).all(axis=1))
        if len(bad):
            raise ServiceError(
                ErrorCode.INVALID_INPUT, f"item {int(bad[0])}: the model produced a non-finite embedding"
            )
        return emb


async def retry_on_model_change(attempt: Callable[[], Awaitable[T]]) -> T:
    """Redo a request whose model was swapped mid-flight (activation), a bounded number of times."""
    for _ in range(MODEL_CHANGE_RETRIES - 1):
        try:
            return await attempt()
        except ModelChanged:
            logger.info("active model changed during a request; redoing it")
    try:
        return await attempt()
    except ModelChanged:
        raise ServiceError(ErrorCode.CONFLICT, "the active model keeps changing; retry") from None
