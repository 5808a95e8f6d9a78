"""The catalogue of one collection: its items, the model that embeds them and the FAISS index they fill.

A ``Catalogue`` is the only owner of its index and its readers-writer lock; every rule that keeps the
database and the index in step lives here:

* **Writes** are one critical section under the write lock: the collection row is claimed for the model
  that embedded the items (``service.items.claim_write``), rows and embeddings are inserted, vectors go
  into the index, then the transaction commits. A failed add rolls the rows back; a failed commit takes
  the vectors out again. Only a committed item is acknowledged, and its embedding is in the database, so a
  crash can always be repaired from there.
* **Reads** share the read lock and check that the model they embedded with is still the active one
  (``ModelChanged`` otherwise: the request is redone with the new model).
* **The model** is swapped as one ``Runtime`` (encoder + index) under the write lock
  (``switch_model``), in the same transaction that moves the collection row to the new model.
* **Snapshots** of the index go to ``<data-dir>/index/<collection>/<model>.faiss``; at start the snapshot
  is loaded and reconciled with the stored embeddings by key, so a ``kill -9`` loses nothing acknowledged.
* **Other replicas** are followed in O(changes): new rows by ``key > watermark``, deletions from the
  removals log, another replica's activation from the collection row (``follow``).
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service import items
from service.db import Database
from service.encoder import Encoder
from service.errors import ErrorCode, ModelChanged, ServiceError, moved_elsewhere, no_model
from service.index import IndexParams, VectorIndex, snapshot_paths, write_snapshot
from service.items import NewRow
from service.rowcache import RowCache
from service.rwlock import RWLock
from service.tables import CollectionRow, ItemRow, utcnow

logger = logging.getLogger(__name__)
DEFAULT = "default"
EMPTY_INDEX = "the index is empty: add items with POST /items first"


@dataclass(eq=False)
class Runtime:
    """A model and the index its embeddings fill; replaced as a whole, so a request sees one of each."""

    encoder: Encoder
    index: VectorIndex
    snapshot_version: int = -1  # index.version at the last snapshot

    @property
    def model_id(self) -> str:
        return self.encoder.model_id


@dataclass(frozen=True, slots=True)
class FollowResult:
    added: int = 0
    removed: int = 0
    followed: str | None = None  # the model this replica switched to after another one activated it


class Catalogue:
    """One collection's items, active model, index, lock, row cache and snapshots (module docstring)."""

    def __init__(
        self,
        name: str,
        db: Database,
        snapshot_dir: Path,
        params: IndexParams,
        row_cache_items: int,
        load_encoder: Callable[[str], Encoder],
    ) -> None:
        self.name = name
        self.db = db
        self.snapshot_dir = snapshot_dir
        self.params = params
        self.rows = RowCache(row_cache_items)  # key -> (id, label), see service.rowcache
        self.runtime: Runtime | None = None
        self._load_encoder = load_encoder
        self._lock = RWLock()
        self._snapshot_mutex = threading.Lock()
        self._maintenance_mutex = threading.Lock()
        # One activation or rollback at a time (service.activation holds it for the whole run).
        self.activation_mutex = threading.Lock()
        # What replicas have applied: rows up to this key, removals up to this seq.
        self._seen_key = 0
        self._seen_removal = 0
        self._own_keys: set[int] = set()  # added here since the last follow pass (already indexed)

    # -- what it serves ------------------------------------------------------------------------------
    @property
    def model_id(self) -> str | None:
        runtime = self.runtime
        return runtime.model_id if runtime else None

    @property
    def size(self) -> int:
        runtime = self.runtime
        return runtime.index.size if runtime else 0

    def require_runtime(self) -> Runtime:
        """The active model and index, or the error that says how to get one."""
        runtime = self.runtime
        if runtime is None:
            if self.name == DEFAULT:
                raise no_model()
            raise ServiceError(
                ErrorCode.CONFLICT,
                f"collection {self.name!r} has no model yet: POST /collections/{self.name}/activate "
                '{"model": "<id>"} (GET /models lists them), or train one with POST /train '
                f'{{"collection": "{self.name}", "activate": true, ...}}',
            )
        return runtime

    def _check_current(self, runtime: Runtime) -> None:
        """Call under the lock: was the work done for the runtime that is still active?"""
        if self.runtime is not runtime:
            raise ModelChanged

    # -- start-up ------------------------------------------------------------------------------------
    def open(self) -> None:
        """Load the collection's model and its index (snapshot + reconciliation; no re-embedding)."""
        with self.db.session() as session:
            row = session.get(CollectionRow, self.name)
            model_id, previous = (row.model_id, row.previous_model_id) if row else (None, None)
        if model_id is None:
            return
        encoder = self._load_encoder(model_id)
        seen_key, seen_removal = self._watermarks()
        index = self.build_index(encoder, embed_missing=True)
        with self._lock.write():
            # a snapshot loaded and found up to date is not written again (a million vectors: a gigabyte)
            self.runtime = Runtime(encoder, index, snapshot_version=0 if index.from_snapshot else -1)
            self._seen_key, self._seen_removal = seen_key, seen_removal
        self.snapshot()

    def _watermarks(self) -> tuple[int, int]:
        with self.db.session() as session:
            return items.last_key(session, self.name), items.last_removal(session, self.name)

    def build_index(self, encoder: Encoder, embed_missing: bool = False) -> VectorIndex:
        """This model's index for the collection: its snapshot, made to hold exactly the stored embeddings.

        With ``embed_missing`` (at start), rows stored without this model's embedding (written behind the
        service's back) are embedded first.
        """
        card = encoder.card
        index = self._load_snapshot(encoder.model_id, card.embedding_dim, card.distance)
        with self.db.session() as session:
            stored = items.embedded_keys(session, self.name, encoder.model_id)
            lacking = np.setdiff1d(items.all_keys(session, self.name), stored) if embed_missing else []
        if len(lacking):
            logger.warning("collection %s: embedding %d item(s) stored without one", self.name, len(lacking))
            with self.db.session() as session:
                rows = items.inputs_of(session, np.asarray(lacking))
            keys, vectors = embed_rows(encoder, rows, 256)
            with self.db.session() as session:
                items.store_embeddings(session, encoder.model_id, keys, vectors)
                session.commit()
            stored = np.union1d(stored, keys)
        indexed = index.keys()
        missing = np.setdiff1d(stored, indexed, assume_unique=True)
        extra = np.setdiff1d(indexed, stored, assume_unique=True)
        if len(extra):
            index.remove(extra)
        if len(missing):
            with self.db.session() as session:
                keys, vectors = items.load_embeddings(session, missing, encoder.model_id, index.dim)
            if index.size == 0:
                index.rebuild(keys, vectors)  # lets an IVF index train on everything at once
            else:
                index.add(keys, vectors)
        if index.needs_rebuild():  # nobody reads this index yet: rebuild in place
            index.rebuild(*index.contents())
        if len(missing) or len(extra):
            logger.info(
                "collection %s: index of %s reconciled with the database (%d added, %d removed, %d total)",
                self.name,
                encoder.model_id,
                len(missing),
                len(extra),
                index.size,
            )
        return index

    def _load_snapshot(self, model_id: str, dim: int, distance: str) -> VectorIndex:
        index_file, _ = snapshot_paths(self.snapshot_dir, model_id)
        if index_file.exists():
            try:
                index = VectorIndex.load(self.snapshot_dir, model_id, dim, distance, self.params)
            except Exception as exc:  # noqa: BLE001 - any unreadable snapshot is rebuilt from the database
                logger.warning("collection %s: snapshot unusable (%s); rebuilding it", self.name, exc)
            else:
                sized = {"flat", "ivf"}  # auto and ivf start flat; a kind that no longer fits its size is
                usable = sized if self.params.kind in ("auto", "ivf") else {self.params.kind}  # rebuilt later
                if index.kind in usable:
                    return index
                logger.info("index type changed from %s to %s; rebuilding", index.kind, self.params.kind)
        return VectorIndex(model_id, dim, distance, self.params)

    # -- reads ---------------------------------------------------------------------------------------
    def nearest(
        self, runtime: Runtime, queries: np.ndarray, k: int, label: str | None = None
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """k nearest (distances, keys) per query; None when no item has ``label``; 409 on an empty index."""
        only = None
        if label is not None:
            with self.db.session() as session:
                only = items.keys_with_label(session, self.name, label)
            if not len(only):
                return None
        with self._lock.read():
            self._check_current(runtime)
            if runtime.index.size == 0:
                raise ServiceError(ErrorCode.EMPTY_INDEX, EMPTY_INDEX)
            return runtime.index.search(queries, k, only)

    def rows_by_key(self, keys: np.ndarray, with_metadata: bool) -> dict[int, tuple[Any, ...]]:
        """key -> (id, label[, metadata]) for search results; keys deleted meanwhile are absent.

        Without metadata the answer comes from the row cache where it can (no query when all are cached).
        """
        wanted = np.unique(keys[keys >= 0]).tolist()
        if with_metadata:
            with self.db.session() as session:
                return items.rows_by_key(session, wanted, with_metadata=True)
        cached, missing = self.rows.get_many(wanted)
        if missing:
            with self.db.session() as session:
                fetched = items.rows_by_key(session, missing, with_metadata=False)
            self.rows.put_many(fetched.items())  # type: ignore[arg-type]
            cached.update(fetched)  # type: ignore[arg-type]
        return cached  # type: ignore[return-value]

    def stored_embeddings(self, runtime: Runtime, item_ids: list[str]) -> dict[str, np.ndarray]:
        """Embeddings of indexed items by id (``{"id": ...}`` query items); unknown ids are a 404."""
        with self.db.session() as session:
            found = items.embeddings_by_id(session, self.name, runtime.model_id, item_ids)
        out = {}
        for item_id in item_ids:
            if item_id not in found:
                raise items.not_found(item_id)
            vector = found[item_id]
            if vector is None:
                raise ModelChanged  # stored for a model activated after this request began
            out[item_id] = vector
        return out

    def get(self, item_id: str) -> tuple[ItemRow, np.ndarray | None]:
        """One row and its embedding under the active model."""
        with self.db.session() as session:
            row = items.row_by_id(session, self.name, item_id)
            return row, items.embedding_of(session, row.key, self.model_id)

    def list(self, label: str | None, limit: int, offset: int) -> tuple[list[ItemRow], int]:
        with self.db.session() as session:
            return items.list_rows(session, self.name, label, limit, offset)

    def input_groups(self) -> list[tuple[str, int | None, int]]:
        with self.db.session() as session:
            return items.input_groups(session, self.name)

    def count(self) -> int:
        with self.db.session() as session:
            return items.count(session, self.name)

    # -- writes --------------------------------------------------------------------------------------
    def add(
        self, runtime: Runtime, rows: Sequence[NewRow], embeddings: np.ndarray, upsert: bool
    ) -> list[str]:
        """Store rows with their embeddings and index them, all or nothing (module docstring)."""
        ids = [r.id for r in rows]
        with self._lock.write():
            self._check_current(runtime)
            index = runtime.index
            with self.db.session() as session:
                items.claim_write(session, self.name, runtime.model_id)
                # Without upsert the unique (collection, id) constraint finds taken ids: no lookup first.
                old_keys = list(items.ids_present(session, self.name, ids).values()) if upsert else []
                items.remove_keys(session, self.name, old_keys)
                try:
                    keys = items.insert_rows(session, self.name, runtime.model_id, rows, embeddings)
                except IntegrityError:
                    session.rollback()
                    taken = sorted(items.ids_present(session, self.name, ids))
                    if not taken:
                        raise
                    raise ServiceError(
                        ErrorCode.CONFLICT,
                        f"{len(taken)} item id(s) already exist ({', '.join(taken[:5])}); "
                        "use ?upsert=true to replace them",
                    ) from None
                index.add(keys, embeddings)  # raises -> the session closes without commit: rolled back
                try:
                    session.commit()
                except BaseException:
                    index.remove(keys)
                    raise
            index.remove(old_keys)  # replaced rows are gone for good; drop their vectors
            self._own_keys.update(keys)
            self.rows.discard(old_keys)
            self.rows.put_many(zip(keys, ((r.id, r.label) for r in rows), strict=True))
        return ids

    def delete(self, item_id: str) -> None:
        """Delete the row, then its vector (a vector left behind by a crash goes at the next start)."""
        with self._lock.write(), self.db.session() as session:
            row = items.row_by_id(session, self.name, item_id)
            self._claim_removal(session)
            items.remove_keys(session, self.name, [row.key])
            session.commit()
            if self.runtime is not None:
                self.runtime.index.remove([row.key])
            self.rows.discard([row.key])

    def clear(self) -> int:
        """Delete every item of the collection (its model stays); returns how many there were."""
        with self._lock.write(), self.db.session() as session:
            self._claim_removal(session)
            keys = items.all_keys(session, self.name)
            items.remove_keys(session, self.name, keys)
            session.commit()
            if self.runtime is not None:
                self.runtime.index.remove(keys)
            self.rows.discard(keys)
        return len(keys)

    def _claim_removal(self, session: Session) -> None:
        """A removal needs no embedding, so a model changed elsewhere is only a 409 until we follow it."""
        try:
            items.claim_write(session, self.name, self.model_id)
        except ModelChanged:
            raise moved_elsewhere(self.name) from None

    # -- the model -----------------------------------------------------------------------------------
    def switch_model(
        self,
        encoder: Encoder,
        index: VectorIndex,
        embed: Callable[[list[tuple[int, str, bytes]]], tuple[np.ndarray, np.ndarray]],
        record: Callable[[Any], None],
    ) -> Runtime:
        """Make ``encoder`` + ``index`` the collection's model, at once, for every reader and writer.

        ``index`` holds the new model's embeddings of the rows seen so far. Under the write lock, in one
        transaction that first claims the collection row: rows added meanwhile are embedded with
        ``embed`` (a write elsewhere that used the old model either committed before the claim, and is
        caught up here, or finds the row moved on and is redone), rows deleted meanwhile leave the index,
        the collection row moves to the new model with the old one as ``previous``, embeddings of any
        other model go, and ``record(session)`` writes the history in the same transaction.
        """
        with self._lock.write():
            previous = self.runtime
            old_model = previous.model_id if previous else None
            with self.db.session() as session:
                items.claim_write(session, self.name, old_model)
                late = items.inputs_without_embedding(session, self.name, encoder.model_id)
                if late:
                    keys, vectors = embed(late)
                    items.store_embeddings(session, encoder.model_id, keys, vectors)
                    index.add(keys, vectors)
                current = np.asarray(items.all_keys(session, self.name), dtype=np.int64)
                gone = np.setdiff1d(index.keys(), current, assume_unique=True)
                index.remove(gone)
                session.execute(
                    update(CollectionRow)
                    .where(CollectionRow.name == self.name)
                    .values(model_id=encoder.model_id, previous_model_id=old_model, activated_at=utcnow())
                )
                items.drop_other_embeddings(
                    session, self.name, [m for m in (encoder.model_id, old_model) if m]
                )
                record(session)
                seen_removal = items.last_removal(session, self.name)
                session.commit()
            self.runtime = Runtime(encoder, index)
            self._seen_key = int(current.max(initial=0))
            self._seen_removal = seen_removal
            self._own_keys.clear()
        logger.info(
            "collection %s: model %s active (%d items; previous %s)",
            self.name,
            encoder.model_id,
            index.size,
            old_model,
        )
        self.snapshot()
        self._drop_snapshots(keep={encoder.model_id, *([old_model] if old_model else [])})
        return self.runtime

    def _drop_snapshots(self, keep: set[str]) -> None:
        """Snapshots of models that are neither active nor the rollback target are of no more use."""
        if not self.snapshot_dir.is_dir():
            return
        for path in self.snapshot_dir.iterdir():
            if path.suffix in (".faiss", ".json") and path.stem not in keep:
                path.unlink(missing_ok=True)

    def maintain(self) -> bool:
        """Rebuild the live index when it asks for it (flat → IVF past the size threshold, an IVF retrained
        after 4x growth, HNSW compaction), without blocking reads or writes: the contents are copied under
        the read lock, the replacement is trained and filled off the lock while the live index journals
        its changes, and only the replay and swap take the write lock. True when rebuilt."""
        runtime = self.runtime
        if runtime is None or not runtime.index.needs_rebuild():
            return False
        with self._maintenance_mutex:
            with self._lock.read():  # no writer meanwhile: the copy and the journal start together
                if self.runtime is not runtime:
                    return False
                keys, vectors = runtime.index.contents()
                runtime.index.begin_journal()
            try:
                built = runtime.index.build(keys, vectors)
            except BaseException:
                with self._lock.write():
                    runtime.index.abandon_journal()
                raise
            del keys, vectors
            with self._lock.write():
                if self.runtime is not runtime:
                    return False
                runtime.index.install(built)
        logger.info("collection %s: index rebuilt as %s", self.name, runtime.index.describe())
        self.snapshot()
        return True

    def sample_recall(self, queries: int = 2) -> float | None:
        """A few more queries of the live approximate index's recall@10 against exact search (None: exact)."""
        runtime = self.runtime
        if runtime is None:
            return None
        with self._lock.read():
            return runtime.index.sample_recall(queries)

    def snapshot(self) -> bool:
        """Write the active index to disk if it changed since the last snapshot; True when written."""
        with self._snapshot_mutex:
            runtime = self.runtime
            if runtime is None:
                return False
            with self._lock.read():
                if runtime.index.version == runtime.snapshot_version:
                    return False
                blob, meta = runtime.index.serialize()
            start = time.perf_counter()
            write_snapshot(self.snapshot_dir, blob, meta)  # outside the lock: writes go on meanwhile
            runtime.snapshot_version = meta["version"]
            logger.info(
                "collection %s: index snapshot of %s, %d vectors in %.3fs",
                self.name,
                runtime.model_id,
                meta["size"],
                time.perf_counter() - start,
            )
            return True

    def remove_files(self) -> None:
        """Its snapshots, once the collection is deleted."""
        shutil.rmtree(self.snapshot_dir, ignore_errors=True)

    # -- other replicas ------------------------------------------------------------------------------
    def follow(self) -> FollowResult:
        """Catch up with writes and activations made by other replicas on the same database."""
        if self.activation_mutex.locked():
            return FollowResult()  # this replica is activating: it decides
        with self.db.session() as session:
            row = session.get(CollectionRow, self.name)
        if row is None:
            return FollowResult()
        runtime = self.runtime
        if row.model_id != (runtime.model_id if runtime else None):
            if row.model_id is None or not self.activation_mutex.acquire(blocking=False):
                return FollowResult()
            try:
                return FollowResult(followed=self._follow_activation(row.model_id))
            finally:
                self.activation_mutex.release()
        if runtime is None:
            return FollowResult()
        if self._seen_removal < row.removed_floor:  # the removals log was pruned past us: compare all
            return self._resync(runtime)
        return self._catch_up(runtime)

    def _follow_activation(self, model_id: str) -> str:
        encoder = self._load_encoder(model_id)
        seen_key, seen_removal = self._watermarks()
        index = self.build_index(encoder)
        with self._lock.write():
            self.runtime = Runtime(encoder, index)
            self._seen_key, self._seen_removal = seen_key, seen_removal
            self._own_keys.clear()
        logger.info("collection %s: followed another replica's activation of %s", self.name, model_id)
        return model_id

    def _catch_up(self, runtime: Runtime) -> FollowResult:
        with self.db.session() as session:
            new_keys = items.embedded_keys(session, self.name, runtime.model_id, after=self._seen_key)
            removals = items.removals_after(session, self.name, self._seen_removal)
        if not len(new_keys) and not removals:
            return FollowResult()
        fresh = np.asarray([k for k in new_keys.tolist() if k not in self._own_keys], dtype=np.int64)
        with self.db.session() as session:
            keys, vectors = items.load_embeddings(session, fresh, runtime.model_id, runtime.index.dim)
        gone = [key for _, key in removals]
        with self._lock.write():
            if self.runtime is not runtime:
                return FollowResult()
            runtime.index.add(keys, vectors)
            runtime.index.remove(gone)
            self.rows.discard(gone)
            if len(new_keys):
                self._seen_key = max(self._seen_key, int(new_keys.max()))
            if removals:
                self._seen_removal = removals[-1][0]
            self._own_keys = {k for k in self._own_keys if k > self._seen_key}
        if len(keys) or gone:
            logger.info("collection %s: caught up, %d added, %d removed", self.name, len(keys), len(gone))
        return FollowResult(added=len(keys), removed=len(gone))

    def _resync(self, runtime: Runtime) -> FollowResult:
        seen_key, seen_removal = self._watermarks()
        with self.db.session() as session:
            stored = items.embedded_keys(session, self.name, runtime.model_id)
        with self._lock.read():
            indexed = runtime.index.keys()
        missing = np.setdiff1d(stored, indexed, assume_unique=True)
        extra = np.setdiff1d(indexed, stored, assume_unique=True)
        with self.db.session() as session:
            keys, vectors = items.load_embeddings(session, missing, runtime.model_id, runtime.index.dim)
        with self._lock.write():
            if self.runtime is not runtime:
                return FollowResult()
            runtime.index.add(keys, vectors)
            runtime.index.remove(extra)
            self.rows.discard(extra.tolist())
            self._seen_key, self._seen_removal = seen_key, seen_removal
            self._own_keys.clear()
        return FollowResult(added=len(keys), removed=len(extra))


def embed_rows(
    encoder: Encoder, rows: Sequence[tuple[int, str, bytes]], batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Embed stored inputs (key, kind, bytes) directly with ``encoder`` (not through the batcher)."""
    keys = np.asarray([r[0] for r in rows], dtype=np.int64)
    out = []
    for i in range(0, len(rows), batch_size):
        raws = [items.decode_input(kind, data) for _, kind, data in rows[i : i + batch_size]]
        out.append(encoder.embed(encoder.decode(raws)))
    vectors = np.concatenate(out) if out else np.zeros((0, encoder.card.embedding_dim), np.float32)
    if not np.isfinite(vectors).all():
        raise ServiceError(ErrorCode.CONFLICT, f"model {encoder.model_id} produced non-finite embeddings")
    return keys, vectors
