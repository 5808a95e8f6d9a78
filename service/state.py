"""What a running app holds: settings, database, batcher, metrics, the model registry and the collections.

Each collection's model, index and lock live in its ``Catalogue`` (``service.catalogue``); this object
only ties the parts together for the routers and the background tasks.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from starlette.concurrency import run_in_threadpool

from service.activation import Activations
from service.batcher import MicroBatcher
from service.catalogue import Runtime
from service.collections import Collections
from service.config import Settings
from service.db import Database
from service.errors import ErrorCode, ModelChanged, ServiceError
from service.metrics import Metrics
from service.registry import ModelRegistry
from service.schemas import RawInput

logger = logging.getLogger(__name__)
T = TypeVar("T")
MODEL_CHANGE_RETRIES = 3


@dataclass(eq=False)
class Service:
    settings: Settings
    db: Database
    batcher: MicroBatcher
    metrics: Metrics
    models: ModelRegistry
    collections: Collections
    activations: Activations

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
