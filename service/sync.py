"""Follow the writes of other API replicas that share this database (``--sync-interval``).

Each replica keeps its own FAISS index; the items table is the truth they share. Every interval a
replica compares its index with the table and catches up:

* rows of its model that it does not index (added elsewhere) are added from their stored embeddings;
* keys it indexes whose rows are gone (deleted elsewhere) are removed;
* when another replica has activated a different model (which re-embedded every row in the same
  transaction that set the active flag), it loads that model and its index from the table, as at start.

The comparison runs without the index lock; the changes are re-checked against the table under the
write lock, where this replica's own writes cannot interleave. A row whose model changed is never
removed here (that is an activation, followed as a whole), so a replica never empties its index while
another one activates. Keys are never reused, so a key seen once always means the same row. Between
passes a replica answers from its own view: a row deleted elsewhere can still be a neighbour (with the
id and label it had) until the next pass drops its key.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select

from service.persistence import diff_with_table, load_embeddings
from service.registry import active_model_id, drop_replaced_snapshot, load_active
from service.repository import IN_CHUNK
from service.state import Runtime, ServiceState
from service.store import ItemRow

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SyncResult:
    added: int = 0
    removed: int = 0
    followed: str | None = None  # the model this replica switched to, if another replica activated one


def sync_with_database(state: ServiceState) -> SyncResult:
    """One catch-up pass (blocking); does nothing while this replica activates a model itself."""
    if state.activation_mutex.locked():
        return SyncResult()
    active = active_model_id(state)
    runtime = state.runtime
    if active is not None and (runtime is None or active != runtime.model_id):
        if not state.activation_mutex.acquire(blocking=False):
            return SyncResult()  # a local activation just started: it decides
        try:
            return SyncResult(followed=_follow_activation(state, active))
        finally:
            state.activation_mutex.release()
    if runtime is None:
        return SyncResult()
    return _catch_up(state, runtime)


def _follow_activation(state: ServiceState, model_id: str) -> str:
    """Load the model another replica activated, with its index rebuilt from the stored embeddings."""
    runtime = load_active(state, model_id)
    with state.lock.write():
        previous, state.runtime = state.runtime, runtime
    state.metrics.set_active_model(model_id)
    logger.info("followed the activation of model %s by another replica", model_id)
    drop_replaced_snapshot(state, previous, model_id)
    return model_id


def _catch_up(state: ServiceState, runtime: Runtime) -> SyncResult:
    with state.lock.read():
        indexed = runtime.index.keys()
    missing, extra = diff_with_table(state, runtime, indexed)
    if not len(missing) and not len(extra):
        return SyncResult()
    with state.lock.write():
        if state.runtime is not runtime:
            return SyncResult()
        gone = np.setdiff1d(extra, _existing_keys(state, extra))  # deleted, not re-embedded elsewhere
        runtime.index.remove(gone)
        state.rows.discard(gone.tolist())
        keys, vectors = load_embeddings(state, missing, runtime.index.dim, runtime.model_id)
        fresh = ~np.isin(keys, runtime.index.keys())  # our own writes may have added some meanwhile
        runtime.index.add(keys[fresh], vectors[fresh])
    result = SyncResult(added=int(fresh.sum()), removed=len(gone))
    if result.added or result.removed:
        logger.info("caught up with other replicas: %d added, %d removed", result.added, result.removed)
    return result


def _existing_keys(state: ServiceState, keys: np.ndarray) -> np.ndarray:
    found: list[int] = []
    with state.session() as session:
        for i in range(0, len(keys), IN_CHUNK):
            chunk = keys[i : i + IN_CHUNK].tolist()
            found.extend(session.scalars(select(ItemRow.key).where(ItemRow.key.in_(chunk))))
    return np.asarray(found, dtype=np.int64)


def run_sync_loop(state: ServiceState, stop: threading.Event, interval: float) -> None:
    """Thread body: ``sync_with_database`` every ``interval`` seconds until ``stop`` is set."""
    while not stop.wait(interval):
        started = time.monotonic()
        try:
            sync_with_database(state)
        except Exception:  # noqa: BLE001 - keep following; the next pass starts from the table again
            logger.exception("catching up with other replicas failed")
        if time.monotonic() - started > interval:
            logger.warning("catching up with other replicas took %.1f s", time.monotonic() - started)
