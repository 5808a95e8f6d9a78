"""Index snapshots and start-up reconciliation with the items table (the source of truth).

The database holds every acknowledged item with its embedding; the FAISS snapshot is only a cache of
it. At start the snapshot of the active model is loaded (or an empty index made) and compared with
the database by key: rows missing from the index are added from their stored embedding bytes, keys
without a row are removed. So a ``kill -9`` at any moment (between a commit and the next snapshot, or
half-way through writing one) loses nothing acknowledged and needs no re-embedding.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from sqlalchemy import select

from service.index import VectorIndex, snapshot_paths, write_snapshot
from service.repository import IN_CHUNK
from service.state import Runtime, ServiceState
from service.store import ItemRow

logger = logging.getLogger(__name__)


def snapshot(state: ServiceState) -> bool:
    """Write the active index to disk if it changed since the last snapshot; True when written."""
    with state.snapshot_mutex:
        runtime = state.runtime
        if runtime is None:
            return False
        if runtime.index.needs_maintenance():
            with state.lock.write():
                runtime.index.maintain()  # IVF upgrade or HNSW compaction
        with state.lock.read():
            if runtime.index.version == runtime.snapshot_version:
                return False
            blob, meta = runtime.index.serialize()
        start = time.perf_counter()
        write_snapshot(state.settings.paths.index, blob, meta)  # outside the lock: writes go on meanwhile
        runtime.snapshot_version = meta["version"]
        logger.info(
            "index snapshot of %s: %d vectors in %.3fs",
            runtime.model_id,
            meta["size"],
            time.perf_counter() - start,
        )
        return True


def load_index(state: ServiceState, runtime_model: str, dim: int, distance: str) -> VectorIndex:
    """This model's snapshot if it is usable with the current settings, else an empty index."""
    params = state.index_params
    index_file, _ = snapshot_paths(state.settings.paths.index, runtime_model)
    if not index_file.exists():
        return VectorIndex(runtime_model, dim, distance, params)
    try:
        index = VectorIndex.load(state.settings.paths.index, runtime_model, dim, distance, params)
    except Exception as exc:  # noqa: BLE001 - any unreadable snapshot is rebuilt from the database
        logger.warning("index snapshot unusable (%s); rebuilding from the database", exc)
        return VectorIndex(runtime_model, dim, distance, params)
    stand_in = params.kind == "ivf" and index.kind == "flat"
    if index.kind != params.kind and not stand_in:
        logger.info("index type changed from %s to %s; rebuilding from the database", index.kind, params.kind)
        return VectorIndex(runtime_model, dim, distance, params)
    return index


def reconcile(state: ServiceState, runtime: Runtime) -> tuple[int, int]:
    """Make the index hold exactly the database's items of this model; returns (added, removed)."""
    index = runtime.index
    missing, extra = diff_with_table(state, runtime, index.keys())
    if len(extra):
        index.remove(extra)
    if len(missing):
        keys, vectors = load_embeddings(state, missing, index.dim)
        if index.size == 0:
            index.rebuild(keys, vectors)  # lets an IVF index train on everything at once
        else:
            index.add(keys, vectors)
    index.maintain()
    if len(extra) or len(missing):
        logger.info(
            "reconciled index of %s with the database: %d added, %d removed, %d total",
            runtime.model_id,
            len(missing),
            len(extra),
            index.size,
        )
    return len(missing), len(extra)


def diff_with_table(
    state: ServiceState, runtime: Runtime, indexed: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(keys of this model's rows that ``indexed`` lacks, keys in ``indexed`` without such a row)."""
    with state.session() as session:
        stored = np.asarray(
            session.scalars(select(ItemRow.key).where(ItemRow.model_id == runtime.model_id)).all(),
            dtype=np.int64,
        )
    missing = np.setdiff1d(stored, indexed, assume_unique=True)
    extra = np.setdiff1d(indexed, stored, assume_unique=True)
    return missing, extra


def load_embeddings(
    state: ServiceState, keys: np.ndarray, dim: int, model_id: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Stored embeddings of these keys, in chunks (no re-embedding needed); rows deleted meanwhile,
    or (given ``model_id``) holding another model's embedding, are left out."""
    out_keys: list[int] = []
    blobs: list[bytes] = []
    with state.session() as session:
        for i in range(0, len(keys), IN_CHUNK):
            query = select(ItemRow.key, ItemRow.embedding).where(
                ItemRow.key.in_(keys[i : i + IN_CHUNK].tolist())
            )
            if model_id is not None:
                query = query.where(ItemRow.model_id == model_id)
            for key, emb in session.execute(query):
                out_keys.append(key)
                blobs.append(emb)
    vectors = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dim)
    return np.asarray(out_keys, dtype=np.int64), vectors
