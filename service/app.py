"""App factory and lifespan: nothing happens at import; ``create_app(settings)`` builds an isolated app.

The lifespan opens the database, registers models (``--model`` and any found under the data dir) and
opens every collection (its model, its index snapshot reconciled with the stored embeddings). Then it
starts five background tasks: the micro-batcher, the periodic snapshotter, the housekeeping thread (job
reaping, job activations, run-dir cleanup, removals pruning), the replica follower (``--sync-interval``)
and the worker supervisor (unless ``--no-worker``). On shutdown it stops them in reverse and writes a
last snapshot of every collection.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DataError
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware

import service
from service.activation import Activations
from service.api import (
    classify,
    collections,
    datasets,
    embed,
    health,
    items,
    jobs,
    models,
    search,
    train,
    verify,
)
from service.api import docs as api_docs
from service.api.deps import default_catalogue, named_catalogue
from service.batcher import MicroBatcher
from service.collections import Collections
from service.config import Settings
from service.console import docs as offline_docs
from service.console import router as console_router
from service.db import Database
from service.errors import (
    ServiceError,
    database_value_error_handler,
    service_error_handler,
    unhandled_error_handler,
    validation_error_handler,
)
from service.housekeeping import run_maintenance_loop
from service.index import IndexParams
from service.metrics import CollectionStats, Metrics, MetricsMiddleware
from service.middleware import ApiKeyMiddleware, BodyLimitMiddleware
from service.registry import ModelRegistry
from service.state import Service
from service.supervisor import WorkerSupervisor
from service.sync import run_index_loop, run_sync_loop
from trainer.card import CardError

logger = logging.getLogger(__name__)
ACTIVATION_SHUTDOWN_WAIT_S = 30.0
ITEM_ROUTERS = (embed, items, search, verify, classify)  # mounted flat (default) and per collection


def open_service(settings: Settings, metrics: Metrics) -> Service:
    """Blocking start-up work (run in a thread): database, models, collections."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.db_url, settings.sqlite_synchronous)
    registry = ModelRegistry(db, settings.paths)
    registry.register_found()
    params = IndexParams(
        settings.index_type,
        settings.hnsw_m,
        settings.hnsw_ef_search,
        settings.ivf_nlist,
        settings.ivf_nprobe,
        settings.auto_index_threshold,
        settings.recall_target,
    )
    catalogues = Collections(db, settings.paths, params, settings.row_cache_items, registry.load_encoder)
    activations = Activations(
        db, registry, settings.max_batch_size, settings.gate_tolerance, settings.gate_sample
    )
    batcher = MicroBatcher(
        settings.max_batch_size,
        settings.max_wait_ms,
        settings.max_queue,
        settings.resolved_torch_threads,
        observe=metrics.observe_batch,
    )
    state = Service(settings, db, batcher, metrics, registry, catalogues, activations)
    activations.interrupted_by_restart()
    catalogues.open_all()
    if settings.model is not None:
        model_id = registry.register_dir(settings.model).model_id
        activations.activate_now(catalogues.default, model_id, "start-up (--model)")
    metrics.bind(
        queue_items=lambda: batcher.pending,
        collections=lambda: [
            CollectionStats(
                c.name,
                c.model_id,
                c.size,
                c.runtime.index.kind if c.runtime else None,
                c.runtime.index.recall if c.runtime else None,
            )
            for c in catalogues.all()
        ],
    )
    return state


async def _snapshot_loop(state: Service, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        await run_in_threadpool(state.collections.snapshot_all)


def close_service(state: Service) -> None:
    """Blocking shutdown work: let running activations finish, write the last snapshots, close the db."""
    deadline = ACTIVATION_SHUTDOWN_WAIT_S
    for catalogue in state.collections.all():
        if catalogue.activation_mutex.acquire(timeout=deadline):
            catalogue.activation_mutex.release()
        else:
            logger.warning(
                "shutting down during an activation of collection %s; it is abandoned", catalogue.name
            )
            deadline = 0.0
    try:
        state.collections.snapshot_all()
    finally:
        state.db.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the lifespan does the work, so tests can build isolated apps on tmp_path."""
    settings = settings or Settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            state = await run_in_threadpool(open_service, settings, metrics)
        except (CardError, ServiceError) as exc:
            logger.error("cannot start: %s", getattr(exc, "detail", exc))  # one readable line first
            raise
        app.state.service = state
        await state.batcher.start()
        # What start-up loaded (torch, the models, SQLAlchemy, pydantic: ~260k objects) lives as long as
        # the process; frozen, full collections stop scanning it and stop pausing requests for ~100 ms.
        gc.collect()
        gc.freeze()  # undone at shutdown, so an app built in a longer-lived process can be collected
        snapshots = (
            asyncio.create_task(_snapshot_loop(state, settings.snapshot_interval))
            if settings.snapshot_interval > 0
            else None
        )
        stop = threading.Event()
        threads = [
            threading.Thread(target=run_maintenance_loop, args=(state, stop), name="housekeeping"),
            threading.Thread(target=run_index_loop, args=(state.collections, stop), name="index-maintenance"),
        ]
        if settings.sync_interval > 0:
            threads.append(
                threading.Thread(
                    target=run_sync_loop,
                    args=(state.collections, stop, settings.sync_interval),
                    name="replica-sync",
                )
            )
        for thread in threads:
            thread.start()
        supervisor = WorkerSupervisor(settings, state.db) if settings.worker else None
        if supervisor is not None:
            supervisor.start()
        try:
            yield
        finally:
            if supervisor is not None:
                await run_in_threadpool(supervisor.stop)
            stop.set()
            if snapshots is not None:
                snapshots.cancel()
            await state.batcher.stop()
            for thread in threads:
                await run_in_threadpool(thread.join, 30)
            await run_in_threadpool(close_service, state)
            gc.unfreeze()

    middleware = [Middleware(MetricsMiddleware, metrics=metrics)]
    if settings.api_key is not None:
        middleware.append(Middleware(ApiKeyMiddleware, api_key=settings.api_key.get_secret_value()))
    middleware.append(
        Middleware(
            BodyLimitMiddleware,
            max_bytes=settings.max_body_bytes,
            overrides={
                "/datasets": (settings.max_upload_bytes, "--max-upload-bytes"),
                "*/items/import": (settings.max_upload_bytes, "--max-upload-bytes"),
            },
        )
    )

    app = FastAPI(
        title="Embedding service",
        version=service.__version__,
        summary="Embed, index, search, verify and classify items with an exported contrastive encoder.",
        lifespan=lifespan,
        middleware=middleware,
        docs_url=None,  # FastAPI's pages load from a CDN: service/console/docs.py serves them offline
        redoc_url=None,
    )
    app.add_exception_handler(ServiceError, service_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(DataError, database_value_error_handler)
    app.add_exception_handler(Exception, unhandled_error_handler)  # counted by MetricsMiddleware
    for module in (health, models, train, jobs, datasets, collections):
        app.include_router(module.router)
    for module in ITEM_ROUTERS:
        app.include_router(module.routes(default_catalogue))
        app.include_router(module.routes(named_catalogue), prefix="/collections/{name}")
    app.include_router(offline_docs.router)
    api_docs.install(app)  # error examples, tags, bearer scheme: see service.api.docs
    app.include_router(console_router)
    return app
