"""App factory and lifespan: nothing happens at import; ``create_app(settings)`` builds an isolated app.

The lifespan opens the database, registers models (``--model`` and any found under the data dir),
loads the active model, loads its index snapshot and reconciles it with the items table, then starts
the micro-batcher and the periodic snapshotter; on shutdown it stops them and writes a last snapshot.
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
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware

import service
from service.api import classify, datasets, embed, health, items, jobs, models, search, train, verify
from service.batcher import MicroBatcher
from service.config import Settings
from service.errors import (
    ServiceError,
    service_error_handler,
    unhandled_error_handler,
    validation_error_handler,
)
from service.metrics import Metrics, MetricsMiddleware
from service.middleware import ApiKeyMiddleware, BodyLimitMiddleware
from service.persistence import snapshot
from service.registry import (
    activate,
    active_model_id,
    check_readable,
    load_active,
    load_encoder,
    register_found_models,
    register_model_dir,
)
from service.state import ServiceState
from service.store import open_db
from service.supervisor import WorkerSupervisor, run_maintenance_loop
from service.sync import run_sync_loop
from trainer.card import CardError

logger = logging.getLogger(__name__)
ACTIVATION_SHUTDOWN_WAIT_S = 30.0


def open_state(settings: Settings, metrics: Metrics) -> ServiceState:
    """Blocking start-up work (run in a thread): database, models, index, reconciliation."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine, sessions = open_db(settings.db_url, settings.sqlite_synchronous)
    batcher = MicroBatcher(
        settings.max_batch_size,
        settings.max_wait_ms,
        settings.max_queue,
        settings.resolved_torch_threads,
        observe=metrics.observe_batch,
    )
    state = ServiceState(settings, engine, sessions, batcher, metrics)
    register_found_models(state)
    wanted = register_model_dir(state, settings.model).model_id if settings.model else None
    active = active_model_id(state)
    if wanted is not None and wanted != active:
        encoder = load_encoder(state, wanted)
        check_readable(state, encoder)
        activate(state, encoder)
    elif active is not None:
        try:
            state.runtime = load_active(state, active)
        except ServiceError as exc:
            if wanted is not None:
                raise
            logger.error("cannot load the active model %s (%s); starting without a model", active, exc.detail)
    if state.runtime is not None:
        snapshot(state)  # persist the reconciled index right away
    metrics.set_active_model(state.runtime.model_id if state.runtime else None)
    metrics.bind(
        index_size=lambda: state.runtime.index.size if state.runtime else 0,
        queue_items=lambda: batcher.pending,
    )
    return state


async def _snapshot_loop(state: ServiceState, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await run_in_threadpool(snapshot, state)
        except Exception:  # noqa: BLE001 - keep snapshotting; the database stays the source of truth
            logger.exception("index snapshot failed")


def close_state(state: ServiceState) -> None:
    """Blocking shutdown work: let a running activation finish, write the last snapshot, close the db."""
    if state.activation_mutex.acquire(timeout=ACTIVATION_SHUTDOWN_WAIT_S):
        state.activation_mutex.release()
    else:
        logger.warning("shutting down during a model activation; it is abandoned")
    try:
        snapshot(state)
    finally:
        state.engine.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the lifespan does the work, so tests can build isolated apps on tmp_path."""
    settings = settings or Settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            state = await run_in_threadpool(open_state, settings, metrics)
        except (CardError, ServiceError) as exc:
            logger.error("cannot start: %s", getattr(exc, "detail", exc))  # one readable line first
            raise
        app.state.service = state
        await state.batcher.start()
        # What start-up loaded (torch, the model, SQLAlchemy, pydantic: ~260k objects) lives as long as
        # the process; frozen, full collections stop scanning it and stop pausing requests for ~100 ms.
        gc.collect()
        gc.freeze()  # undone at shutdown, so an app built in a longer-lived process can be collected
        snapshots = (
            asyncio.create_task(_snapshot_loop(state, settings.snapshot_interval))
            if settings.snapshot_interval > 0
            else None
        )
        housekeeping_stop = threading.Event()
        housekeeping = threading.Thread(
            target=run_maintenance_loop, args=(state, housekeeping_stop), name="job-housekeeping", daemon=True
        )
        housekeeping.start()
        sync = (
            threading.Thread(
                target=run_sync_loop,
                args=(state, housekeeping_stop, settings.sync_interval),
                name="replica-sync",
            )
            if settings.sync_interval > 0
            else None
        )
        if sync is not None:
            sync.start()
        supervisor = WorkerSupervisor(settings, state) if settings.worker else None
        if supervisor is not None:
            supervisor.start()
        try:
            yield
        finally:
            if supervisor is not None:
                await run_in_threadpool(supervisor.stop)
            housekeeping_stop.set()
            if snapshots is not None:
                snapshots.cancel()
            await state.batcher.stop()
            await run_in_threadpool(housekeeping.join, 10)
            if sync is not None:
                await run_in_threadpool(sync.join, 30)
            await run_in_threadpool(close_state, state)
            gc.unfreeze()

    middleware = [Middleware(MetricsMiddleware, metrics=metrics)]
    if settings.api_key is not None:
        middleware.append(Middleware(ApiKeyMiddleware, api_key=settings.api_key.get_secret_value()))
    middleware.append(
        Middleware(
            BodyLimitMiddleware,
            max_bytes=settings.max_body_bytes,
            overrides={"/datasets": (settings.max_upload_bytes, "--max-upload-bytes")},
        )
    )

    app = FastAPI(
        title="Embedding service",
        version=service.__version__,
        summary="Embed, index, search, verify and classify items with an exported contrastive encoder.",
        lifespan=lifespan,
        middleware=middleware,
    )
    app.add_exception_handler(ServiceError, service_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(Exception, unhandled_error_handler)  # counted by MetricsMiddleware
    for module in (health, embed, items, search, verify, classify, models, train, jobs, datasets):
        app.include_router(module.router)
    return app
