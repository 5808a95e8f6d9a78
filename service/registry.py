"""Model registry and activation.

Registering copies an exported directory under ``<data-dir>/models/<model_id>/`` and records it.
Activating loads the encoder, checks it can read every stored input, re-embeds all items from their
stored inputs into a fresh index (without holding any lock, so the service keeps serving), then,
under the write lock, embeds what was added meanwhile, commits the new embeddings together with the
active flag, and swaps model and index in one assignment.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select, update

from service.encoder import Encoder
from service.errors import ErrorCode, ServiceError
from service.index import VectorIndex, snapshot_paths
from service.persistence import load_index, reconcile, snapshot
from service.repository import decode_input
from service.state import Runtime, ServiceState
from service.store import ItemRow, ModelRow
from trainer.card import CardError, ModelCard, read_card

logger = logging.getLogger(__name__)
REEMBED_CHUNK = 1024


# -- registration ------------------------------------------------------------------------------------
def register_model_dir(state: ServiceState, source: Path) -> ModelCard:
    """Copy a model directory into the data dir (once) and record it; raises CardError when unusable."""
    source = Path(source)
    card = read_card(source)
    target = state.settings.paths.models / card.model_id
    if source.resolve() != target.resolve():
        if target.exists():
            if read_card(target).encoder_sha256 != card.encoder_sha256:
                raise CardError(
                    f"a different model with id {card.model_id!r} is already registered at {target}"
                )
        else:
            _copy_dir(source, target)
    Encoder.load(target)  # refuse now, not at activation, a directory we cannot honour
    with state.session() as session:
        row = session.get(ModelRow, card.model_id)
        if row is None:
            session.add(
                ModelRow(id=card.model_id, path=str(target.resolve()), card=card.model_dump(mode="json"))
            )
        else:
            row.path, row.card = str(target.resolve()), card.model_dump(mode="json")
        session.commit()
    logger.info("registered model %s at %s", card.model_id, target)
    return card


def _copy_dir(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        tmp.rename(target)  # readers never see a half-copied model
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def register_found_models(state: ServiceState) -> None:
    """Record model directories already under ``<data-dir>/models`` (e.g. written by the trainer)."""
    models_dir = state.settings.paths.models
    if not models_dir.is_dir():
        return
    with state.session() as session:
        known = set(session.scalars(select(ModelRow.id)).all())
    for path in sorted(p for p in models_dir.iterdir() if (p / "model.json").is_file()):
        if path.name in known:
            continue
        try:
            register_model_dir(state, path)
        except (CardError, OSError) as exc:
            logger.warning("skipping model directory %s: %s", path, exc)


# -- loading and activation --------------------------------------------------------------------------
def model_row(state: ServiceState, model_id: str) -> ModelRow:
    with state.session() as session:
        row = session.get(ModelRow, model_id)
    if row is None:
        raise ServiceError(ErrorCode.NOT_FOUND, f"no registered model with id {model_id!r} (GET /models)")
    return row


def active_model_id(state: ServiceState) -> str | None:
    with state.session() as session:
        return session.scalar(select(ModelRow.id).where(ModelRow.active.is_(True)))


def load_encoder(state: ServiceState, model_id: str) -> Encoder:
    row = model_row(state, model_id)
    path = Path(row.path)
    if not path.exists():  # the data dir moved since registration: models live under it
        path = state.settings.paths.models / model_id
    try:
        return Encoder.load(path)
    except CardError as exc:
        raise ServiceError(ErrorCode.CONFLICT, f"model {model_id} cannot be loaded: {exc}") from exc


def check_readable(state: ServiceState, encoder: Encoder) -> None:
    """409 unless the model can read every stored input (it must re-embed them all)."""
    with state.session() as session:
        groups = session.execute(
            select(ItemRow.input_kind, ItemRow.input_dim, func.count()).group_by(
                ItemRow.input_kind, ItemRow.input_dim
            )
        )
        bad = [(kind, dim, n) for kind, dim, n in groups if not encoder.can_read(kind, dim)]
    if bad:
        found = "; ".join(
            f"{n} {kind} item(s)" + (f" of length {dim}" if dim else "") for kind, dim, n in bad
        )
        raise ServiceError(
            ErrorCode.CONFLICT,
            f"model {encoder.model_id} takes {encoder.describe_input()}, but the stored items include "
            f"{found}: it could not re-embed them (delete them, or activate a model that reads them)",
        )


def load_active(state: ServiceState, model_id: str) -> Runtime:
    """Start-up path for the model that was already active: snapshot + reconciliation, no re-embedding."""
    encoder = load_encoder(state, model_id)
    card = encoder.card
    runtime = Runtime(encoder, load_index(state, model_id, card.embedding_dim, card.distance))
    runtime.index.remove(_reembed_stale(state, encoder))  # their snapshot vectors are outdated
    reconcile(state, runtime)
    return runtime


def _reembed_stale(state: ServiceState, encoder: Encoder) -> np.ndarray:
    """Give rows carrying another model's embedding (outside meddling only) new ones; returns their keys."""
    with state.session() as session:
        rows = session.execute(
            select(ItemRow.key, ItemRow.input_kind, ItemRow.input_data).where(
                ItemRow.model_id != encoder.model_id
            )
        ).all()
    if not rows:
        return np.zeros(0, np.int64)
    logger.warning("re-embedding %d item(s) stored with another model", len(rows))
    keys, vectors = _embed_rows(encoder, rows, state.settings.max_batch_size)
    _store_embeddings(state, encoder.model_id, keys, vectors, activate=False)
    return keys


def activate(
    state: ServiceState, encoder: Encoder, progress: Callable[[int, int], None] | None = None
) -> Runtime:
    """Re-embed every item with ``encoder`` into a fresh index, then commit and swap (module docstring)."""
    report = progress or (lambda done, total: None)
    card = encoder.card
    with state.session() as session:
        total = int(session.scalar(select(func.count()).select_from(ItemRow)) or 0)
    done_keys: list[np.ndarray] = []
    done_vecs: list[np.ndarray] = []
    last, done = 0, 0
    while True:  # phase 1, no lock: everything stored so far
        with state.session() as session:
            rows = session.execute(
                select(ItemRow.key, ItemRow.input_kind, ItemRow.input_data)
                .where(ItemRow.key > last)
                .order_by(ItemRow.key)
                .limit(REEMBED_CHUNK)
            ).all()
        if not rows:
            break
        keys, vectors = _embed_rows(encoder, rows, state.settings.max_batch_size)
        done_keys.append(keys)
        done_vecs.append(vectors)
        last, done = int(rows[-1][0]), done + len(rows)
        report(done, total)
    keys = np.concatenate(done_keys) if done_keys else np.zeros(0, np.int64)
    vectors = np.concatenate(done_vecs) if done_vecs else np.zeros((0, card.embedding_dim), np.float32)

    with state.lock.write():  # phase 2: catch up with writes made meanwhile, commit, swap
        with state.session() as session:
            current = np.asarray(session.scalars(select(ItemRow.key)).all(), dtype=np.int64)
            added = np.setdiff1d(current, keys)
            rows = (
                session.execute(
                    select(ItemRow.key, ItemRow.input_kind, ItemRow.input_data).where(
                        ItemRow.key.in_(added.tolist())
                    )
                ).all()
                if len(added)
                else []
            )
        if rows:
            new_keys, new_vecs = _embed_rows(encoder, rows, state.settings.max_batch_size)
            keys, vectors = np.concatenate([keys, new_keys]), np.concatenate([vectors, new_vecs])
        live = np.isin(keys, current)
        keys, vectors = keys[live], vectors[live]
        index = VectorIndex(encoder.model_id, card.embedding_dim, card.distance, state.index_params)
        index.rebuild(keys, vectors)
        _store_embeddings(state, encoder.model_id, keys, vectors, activate=True)
        previous, state.runtime = state.runtime, Runtime(encoder, index)
    state.metrics.set_active_model(encoder.model_id)
    logger.info("activated model %s: %d item(s) re-embedded", encoder.model_id, len(keys))
    snapshot(state)
    drop_replaced_snapshot(state, previous, encoder.model_id)
    return state.runtime


def drop_replaced_snapshot(state: ServiceState, previous: Runtime | None, model_id: str) -> None:
    """Once ``model_id`` serves, the index snapshot of the model it replaced is of no more use."""
    if previous is not None and previous.model_id != model_id:
        for path in snapshot_paths(state.settings.paths.index, previous.model_id):
            path.unlink(missing_ok=True)


def _embed_rows(encoder: Encoder, rows: Sequence[Any], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Embed stored inputs (key, kind, bytes) directly with ``encoder`` (not via the batcher)."""
    keys = np.asarray([r[0] for r in rows], dtype=np.int64)
    out = []
    for i in range(0, len(rows), batch_size):
        raws = [decode_input(kind, data) for _, kind, data in rows[i : i + batch_size]]
        out.append(encoder.embed(encoder.decode(raws)))
    vectors = np.concatenate(out) if out else np.zeros((0, encoder.card.embedding_dim), np.float32)
    if not np.isfinite(vectors).all():
        raise ServiceError(ErrorCode.CONFLICT, f"model {encoder.model_id} produced non-finite embeddings")
    return keys, vectors


def _store_embeddings(
    state: ServiceState, model_id: str, keys: np.ndarray, vectors: np.ndarray, activate: bool
) -> None:
    """One transaction: new embeddings for these rows (and the active flag, when activating)."""
    with state.session() as session:
        for i in range(0, len(keys), REEMBED_CHUNK):
            session.execute(
                update(ItemRow),
                [
                    {"key": int(k), "embedding": v.tobytes(), "model_id": model_id}
                    for k, v in zip(keys[i : i + REEMBED_CHUNK], vectors[i : i + REEMBED_CHUNK], strict=True)
                ],
            )
        if activate:
            session.execute(update(ModelRow).where(ModelRow.id != model_id).values(active=False))
            session.execute(
                update(ModelRow)
                .where(ModelRow.id == model_id)
                .values(active=True, activated_at=datetime.now(UTC))
            )
        session.commit()


def record_failed_activation(state: ServiceState, model_id: str, error: str) -> None:
    """Show an activation that failed before it could start (e.g. a job's ``activate``) on the model."""
    if state.activation_mutex.acquire(blocking=False):  # never hide a running activation's progress
        try:
            failed = {"model_id": model_id, "status": "failed", "done": 0, "total": None, "error": error}
            state.activation = failed
        finally:
            state.activation_mutex.release()


def start_activation(state: ServiceState, model_id: str) -> str:
    """Activate in a background thread; returns "active" (nothing to do) or "activating"."""
    if state.runtime is not None and state.runtime.model_id == model_id:
        model_row(state, model_id)
        return "active"
    if not state.activation_mutex.acquire(blocking=False):
        raise ServiceError(ErrorCode.CONFLICT, "another model activation is in progress (GET /models/{id})")
    try:
        encoder = load_encoder(state, model_id)
        check_readable(state, encoder)
    except BaseException:
        state.activation_mutex.release()
        raise
    status: dict[str, Any] = {
        "model_id": model_id,
        "status": "running",
        "done": 0,
        "total": None,
        "error": None,
    }
    state.activation = status

    def progress(done: int, total: int) -> None:
        status.update(done=done, total=total)

    def run() -> None:
        outcome: dict[str, Any] = {"status": "failed", "error": "the activation was interrupted"}
        try:
            activate(state, encoder, progress)
            outcome = {"status": "done"}
        except Exception as exc:  # noqa: BLE001 - reported through GET /models/{id}
            logger.exception("activation of %s failed", model_id)
            outcome = {"status": "failed", "error": str(getattr(exc, "detail", exc))}
        finally:
            state.activation_mutex.release()
            status.update(outcome)  # only now: whoever sees "done" can start the next activation at once

    threading.Thread(target=run, name=f"activate-{model_id}", daemon=True).start()
    return "activating"
