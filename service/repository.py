"""Item reads and writes that keep the database and the index in step.

A write is one critical section under the index's write lock: rows are inserted and flushed (keys
assigned), vectors added to the index, then the transaction commits. If the index add fails the
transaction rolls back; if the commit fails the vectors come out of the index again. Only after the
commit is an item acknowledged, and its embedding is in the row, so a crash can always be repaired
from the database (see ``service.persistence``).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from service.errors import ErrorCode, ModelChanged, ServiceError
from service.schemas import RawInput
from service.state import Runtime, ServiceState
from service.store import ItemRow

IN_CHUNK = 500  # keys per IN (...) clause: well under every database's parameter limit


@dataclass(frozen=True, slots=True)
class NewRow:
    id: str
    label: str | None
    metadata: dict[str, Any] | None
    raw: RawInput


def encode_input(raw: RawInput) -> tuple[str, int | None, bytes]:
    """(kind, vector length, bytes) as stored: float32 bytes for vectors, the file itself for images."""
    if isinstance(raw, bytes):
        return "image", None, raw
    return "vector", int(raw.shape[0]), np.ascontiguousarray(raw, dtype=np.float32).tobytes()


def decode_input(kind: str, data: bytes) -> RawInput:
    return data if kind == "image" else np.frombuffer(data, dtype=np.float32)


def insert_items(
    state: ServiceState, runtime: Runtime, rows: Sequence[NewRow], embeddings: np.ndarray, upsert: bool
) -> list[str]:
    """Store rows with their embeddings and index them, all or nothing (see the module docstring)."""
    ids = [r.id for r in rows]
    with state.lock.write():
        state.check_current(runtime)
        index = runtime.index
        with state.session() as session:
            found = session.execute(select(ItemRow.id, ItemRow.key).where(ItemRow.id.in_(ids))).all()
            existing: dict[str, int] = {item_id: key for item_id, key in found}
            if existing and not upsert:
                shown = ", ".join(sorted(existing)[:5])
                raise ServiceError(
                    ErrorCode.CONFLICT,
                    f"{len(existing)} item id(s) already exist ({shown}); use ?upsert=true to replace them",
                )
            old_keys = list(existing.values())
            if old_keys:
                session.execute(delete(ItemRow).where(ItemRow.key.in_(old_keys)))
            new = [
                ItemRow(
                    id=r.id,
                    label=r.label,
                    meta=r.metadata,
                    input_kind=kind,
                    input_dim=dim,
                    input_data=data,
                    embedding=embeddings[i].tobytes(),
                    model_id=runtime.model_id,
                )
                for i, r in enumerate(rows)
                for kind, dim, data in [encode_input(r.raw)]
            ]
            session.add_all(new)
            session.flush()
            keys = [row.key for row in new]
            index.add(keys, embeddings)  # raises -> the session closes without commit: rolled back
            try:
                session.commit()
            except BaseException:
                index.remove(keys)
                raise
        index.remove(old_keys)  # replaced rows are gone for good; drop their vectors
        state.rows.discard(old_keys)
        state.rows.put_many(zip(keys, ((r.id, r.label) for r in rows), strict=True))
    return ids


def delete_item(state: ServiceState, item_id: str) -> None:
    """Delete the row, then its vector (a vector left behind by a crash is removed at the next start)."""
    with state.lock.write(), state.session() as session:
        key = session.scalar(select(ItemRow.key).where(ItemRow.id == item_id))
        if key is None:
            raise not_found(item_id)
        session.execute(delete(ItemRow).where(ItemRow.key == key))
        session.commit()
        if state.runtime is not None:
            state.runtime.index.remove([key])
        state.rows.discard([key])


def not_found(item_id: str) -> ServiceError:
    return ServiceError(ErrorCode.NOT_FOUND, f"no item with id {item_id!r}")


def get_item(session: Session, item_id: str) -> ItemRow:
    row = session.scalar(select(ItemRow).where(ItemRow.id == item_id))
    if row is None:
        raise not_found(item_id)
    return row


def item_out(row: ItemRow, include_input: bool = False, include_embedding: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": row.id,
        "label": row.label,
        "metadata": row.meta,
        "model": row.model_id,
        "created_at": row.created_at,
    }
    if include_input:
        raw = decode_input(row.input_kind, row.input_data)
        out["input"] = (
            {"image": base64.b64encode(raw).decode()} if isinstance(raw, bytes) else {"vector": raw.tolist()}
        )
    if include_embedding:
        out["embedding"] = np.frombuffer(row.embedding, dtype=np.float32).tolist()
    return out


def list_items(session: Session, label: str | None, limit: int, offset: int) -> tuple[list[ItemRow], int]:
    query = select(ItemRow)
    count = select(func.count()).select_from(ItemRow)
    if label is not None:
        query, count = query.where(ItemRow.label == label), count.where(ItemRow.label == label)
    rows = session.scalars(query.order_by(ItemRow.key).limit(limit).offset(offset)).all()
    return list(rows), int(session.scalar(count) or 0)


def stored_embeddings(state: ServiceState, runtime: Runtime, item_ids: list[str]) -> dict[str, np.ndarray]:
    """Embeddings of indexed items by id (for ``{"id": ...}`` query items); unknown ids are a 404."""
    with state.session() as session:
        found = {
            item_id: (model_id, emb)
            for item_id, model_id, emb in session.execute(
                select(ItemRow.id, ItemRow.model_id, ItemRow.embedding).where(ItemRow.id.in_(item_ids))
            )
        }
    out = {}
    for item_id in item_ids:
        if item_id not in found:
            raise not_found(item_id)
        model_id, emb = found[item_id]
        if model_id != runtime.model_id:
            raise ModelChanged  # stored for the model that was activated after this request began
        out[item_id] = np.frombuffer(emb, dtype=np.float32)
    return out


def keys_with_label(state: ServiceState, label: str) -> np.ndarray:
    with state.session() as session:
        keys = session.scalars(select(ItemRow.key).where(ItemRow.label == label)).all()
    return np.asarray(keys, dtype=np.int64)


def rows_by_key(state: ServiceState, keys: np.ndarray, with_metadata: bool) -> dict[int, tuple[Any, ...]]:
    """key -> (id, label[, metadata]) for search results; keys deleted meanwhile are simply absent.

    Without metadata the answer comes from ``state.rows`` where it can (no query when all are cached).
    """
    wanted = np.unique(keys[keys >= 0]).tolist()
    if not with_metadata:
        cached, missing = state.rows.get_many(wanted)
        if missing:
            fetched = _fetch_rows(state, missing, with_metadata=False)
            state.rows.put_many(fetched.items())
            cached.update(fetched)
        return cached
    return _fetch_rows(state, wanted, with_metadata=True)


def _fetch_rows(state: ServiceState, wanted: list[int], with_metadata: bool) -> dict[int, tuple[Any, ...]]:
    columns = [ItemRow.key, ItemRow.id, ItemRow.label] + ([ItemRow.meta] if with_metadata else [])
    out: dict[int, tuple[Any, ...]] = {}
    with state.session() as session:
        for i in range(0, len(wanted), IN_CHUNK):
            chunk = wanted[i : i + IN_CHUNK]
            for row in session.execute(select(*columns).where(ItemRow.key.in_(chunk))):
                out[row[0]] = row[1:]
    return out
