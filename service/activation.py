"""Putting a model live in a collection: the promotion gate, the re-embedding, the swap, and rollback.

An activation (``Activations.start``) runs in three steps:

1. **Gate** (in the request, seconds): on a fixed, seeded sample of the collection's labelled items, the
   candidate and the active model are compared by leave-one-out kNN accuracy and MAP@R. Worse by more
   than the tolerance on either → refused (409 with both models' numbers; ``refused: ...`` on a job),
   unless ``force``. A collection without a model or without labels activates without a gate, and the
   history says so.
2. **Re-embedding** (a background thread, no lock held): every stored input is embedded with the new
   model (embeddings it already has, e.g. as the rollback target, are reused) into a fresh index,
   committed in chunks while the old model keeps serving.
3. **Swap** (``Catalogue.switch_model``): rows added meanwhile are caught up under the write lock and the
   collection moves to the new model in one transaction; the old model becomes the rollback target.

A rollback is steps 2 and 3 towards the previous model, whose embeddings and snapshot were kept: only
items added since are embedded, so it is a swap, not a re-embedding. Every run leaves a row in the
collection's history: who asked (a request or a job), what the gate measured, the outcome.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service import items
from service.catalogue import Catalogue, embed_rows
from service.db import Database
from service.encoder import Encoder
from service.errors import ErrorCode, ServiceError, activating
from service.registry import ModelRegistry
from service.tables import ActivationRow, CollectionRow, EmbeddingRow, ItemRow, utcnow
from trainer.metrics import knn_predict, knn_search, map_at_r

logger = logging.getLogger(__name__)
REEMBED_CHUNK = 1024
GATE_K = 5


class ActivationStatus(StrEnum):
    """The one vocabulary of an activation, in the history and on a job's ``activation``."""

    PENDING = "pending"  # a job's model waits for the service to take it up
    ACTIVATING = "activating"
    ACTIVE = "active"
    FAILED = "failed"
    REFUSED = "refused"  # the promotion gate found it worse than the active model


class GateRefused(ServiceError):
    """409: the promotion gate found the candidate worse than the active model."""

    def __init__(self, detail: str, gate: GateResult) -> None:
        super().__init__(ErrorCode.CONFLICT, detail)
        self.gate = gate


@dataclass(frozen=True)
class GateResult:
    """What the promotion gate measured (``checked`` False: no gate ran, ``reason`` says why)."""

    checked: bool
    passed: bool
    reason: str
    sample: int = 0
    tolerance: float = 0.0
    current_model: str | None = None
    current: dict[str, float] | None = None
    candidate: dict[str, float] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def leave_one_out_knn_accuracy(emb: np.ndarray, y: np.ndarray, k: int, distance: str) -> float:
    """kNN accuracy of every sample against all the others (itself left out)."""
    dist, idx = knn_search(emb, emb, min(k, len(y) - 1), distance, exclude_self=True)  # type: ignore[arg-type]
    return float(np.mean(knn_predict(y[idx], dist) == y))


def gate_metrics(emb: np.ndarray, y: np.ndarray, distance: str) -> dict[str, float]:
    return {
        "knn_accuracy": leave_one_out_knn_accuracy(emb, y, GATE_K, distance),
        "map_at_r": float(map_at_r(emb, y, distance)),  # type: ignore[arg-type]
    }


class Activations:
    """Starts activations and rollbacks, runs the gate, and records the history of every collection."""

    def __init__(
        self,
        db: Database,
        models: ModelRegistry,
        batch_size: int,
        gate_tolerance: float,
        gate_sample: int,
    ) -> None:
        self.db = db
        self.models = models
        self.batch_size = batch_size
        self.gate_tolerance = gate_tolerance
        self.gate_sample = gate_sample

    # -- the gate ------------------------------------------------------------------------------------
    def gate(self, catalogue: Catalogue, encoder: Encoder) -> GateResult:
        current = catalogue.runtime
        if current is None:
            return GateResult(False, True, "no model was active: activated without a gate")
        with self.db.session() as session:
            keys, labels = items.labelled(session, catalogue.name)
        names, codes, counts = np.unique(
            np.asarray(labels, dtype=object), return_inverse=True, return_counts=True
        )
        usable = counts[codes] >= 2  # a label seen once cannot be found again
        if int((counts >= 2).sum()) < 2:
            return GateResult(
                False, True, "too few labelled items to compare (2 labels with 2 items each): no gate"
            )
        keys, codes = keys[usable], codes[usable]
        if len(keys) > self.gate_sample:  # a fixed sample: the same items for every candidate
            pick = np.sort(np.random.default_rng(0).choice(len(keys), self.gate_sample, replace=False))
            keys, codes = keys[pick], codes[pick]
        with self.db.session() as session:
            cur_keys, cur_vecs = items.load_embeddings(session, keys, current.model_id, current.index.dim)
            rows = items.inputs_of(session, cur_keys)
        y = codes[np.searchsorted(keys, cur_keys)]
        _, cand_vecs = embed_rows(encoder, rows, self.batch_size)
        cur = gate_metrics(cur_vecs, y, current.encoder.card.distance)
        cand = gate_metrics(cand_vecs, y, encoder.card.distance)
        tol = self.gate_tolerance
        worse = [m for m in cur if cand[m] < cur[m] - tol]
        shown = ", ".join(f"{m} {cand[m]:.4f} vs {cur[m]:.4f}" for m in cur)
        reason = (
            f"worse than the active model {current.model_id} on {len(y)} labelled items ({shown}; "
            f"tolerance {tol:g})"
            if worse
            else f"not worse than the active model {current.model_id} on {len(y)} labelled items ({shown})"
        )
        return GateResult(True, not worse, reason, len(y), tol, current.model_id, cur, cand)

    # -- activation ----------------------------------------------------------------------------------
    def start(
        self, catalogue: Catalogue, model_id: str, *, force: bool = False, requested_by: str = "request"
    ) -> dict[str, Any]:
        """Gate, then re-embed in the background (``status`` "activating"); "active" if it already is."""
        if catalogue.model_id == model_id:
            self.models.row(model_id)
            return {"status": ActivationStatus.ACTIVE.value, "model": model_id, "activation": None}
        if not catalogue.activation_mutex.acquire(blocking=False):
            raise activating(catalogue.name)
        try:
            try:
                encoder = self.models.load_encoder(model_id)
                self.check_readable(catalogue, encoder)
            except ServiceError as exc:
                if exc.code is not ErrorCode.NOT_FOUND:  # the model exists but cannot take over: say so
                    failed = GateResult(
                        False, False, "not checked: the model cannot take the collection over"
                    )
                    self._record(
                        catalogue,
                        model_id,
                        "activation",
                        requested_by,
                        ActivationStatus.FAILED,
                        failed,
                        exc.detail,
                    )
                raise
            gate = GateResult(False, True, "forced: no gate") if force else self.gate(catalogue, encoder)
            if not gate.passed:
                self._record(catalogue, model_id, "activation", requested_by, ActivationStatus.REFUSED, gate)
                raise GateRefused(
                    f"model {model_id} was not activated in collection {catalogue.name!r}: {gate.reason}; "
                    'pass "force": true to activate it anyway',
                    gate,
                )
            seq = self._record(
                catalogue, model_id, "activation", requested_by, ActivationStatus.ACTIVATING, gate
            )
        except BaseException:
            catalogue.activation_mutex.release()
            raise
        threading.Thread(
            target=self._run, args=(catalogue, encoder, seq), name=f"activate-{catalogue.name}", daemon=True
        ).start()
        return {"status": ActivationStatus.ACTIVATING.value, "model": model_id, "activation": seq}

    def activate_now(self, catalogue: Catalogue, model_id: str, requested_by: str) -> None:
        """Activate synchronously without a gate (start-up with --model, a new collection's first model)."""
        with catalogue.activation_mutex:
            if catalogue.model_id == model_id:
                return
            encoder = self.models.load_encoder(model_id)
            self.check_readable(catalogue, encoder)
            gate = GateResult(False, True, f"{requested_by}: no gate")
            seq = self._record(
                catalogue, model_id, "activation", requested_by, ActivationStatus.ACTIVATING, gate
            )
            self._switch(catalogue, encoder, seq)

    def rollback(self, catalogue: Catalogue, requested_by: str = "request") -> dict[str, Any]:
        """Back to the model active before the last activation, reusing its kept embeddings and index."""
        with self.db.session() as session:
            row = session.get(CollectionRow, catalogue.name)
            previous = row.previous_model_id if row else None
        if previous is None:
            raise ServiceError(
                ErrorCode.CONFLICT, f"collection {catalogue.name!r} has no earlier model to roll back to"
            )
        if not catalogue.activation_mutex.acquire(blocking=False):
            raise activating(catalogue.name)
        try:
            encoder = self.models.load_encoder(previous)
            gate = GateResult(False, True, "rollback: no gate")
            seq = self._record(
                catalogue, previous, "rollback", requested_by, ActivationStatus.ACTIVATING, gate
            )
            self._switch(catalogue, encoder, seq)
        finally:
            catalogue.activation_mutex.release()
        return {"status": ActivationStatus.ACTIVE.value, "model": previous, "activation": seq}

    def check_readable(self, catalogue: Catalogue, encoder: Encoder) -> None:
        """409 unless the model can read every stored input of the collection (it must re-embed them)."""
        bad = [(kind, dim, n) for kind, dim, n in catalogue.input_groups() if not encoder.can_read(kind, dim)]
        if bad:
            found = "; ".join(
                f"{n} {kind} item(s)" + (f" of length {dim}" if dim else "") for kind, dim, n in bad
            )
            raise ServiceError(
                ErrorCode.CONFLICT,
                f"model {encoder.model_id} takes {encoder.describe_input()}, but collection "
                f"{catalogue.name!r} holds {found}: it could not re-embed them (use another collection, "
                "or empty this one first)",
            )

    def _run(self, catalogue: Catalogue, encoder: Encoder, seq: int) -> None:
        try:
            self._switch(catalogue, encoder, seq)
        except Exception:  # noqa: BLE001 - recorded in the history, which GET /collections/{name} shows
            logger.exception("collection %s: activation of %s failed", catalogue.name, encoder.model_id)
        finally:
            catalogue.activation_mutex.release()

    def _switch(self, catalogue: Catalogue, encoder: Encoder, seq: int) -> None:
        """Re-embed what the model lacks into its index, then swap; the history row follows each step."""
        try:
            index = catalogue.build_index(encoder)  # embeddings it already has (a rollback target) are reused
            with self.db.session() as session:
                total = items.count(session, catalogue.name)
            self._progress(seq, index.size, total)
            last = 0
            while True:
                with self.db.session() as session:
                    rows = items.inputs_without_embedding(
                        session, catalogue.name, encoder.model_id, after=last, limit=REEMBED_CHUNK
                    )
                if not rows:
                    break
                keys, vectors = embed_rows(encoder, rows, self.batch_size)
                with self.db.session() as session:
                    items.store_embeddings(session, encoder.model_id, keys, vectors)
                    session.commit()
                index.add(keys, vectors)
                last = int(keys[-1])
                self._progress(seq, index.size, total)
            if index.needs_rebuild():  # not live yet: its final kind now, not in the background later
                index.rebuild(*index.contents())
            catalogue.switch_model(
                encoder,
                index,
                embed=lambda rows: embed_rows(encoder, rows, self.batch_size),
                record=lambda session: self._finish(session, seq, ActivationStatus.ACTIVE),
            )
        except BaseException as exc:
            self._fail(
                catalogue, encoder.model_id, seq, str(getattr(exc, "detail", exc)) or type(exc).__name__
            )
            raise

    # -- the history ---------------------------------------------------------------------------------
    def _record(
        self,
        catalogue: Catalogue,
        model_id: str,
        kind: str,
        requested_by: str,
        status: ActivationStatus,
        gate: GateResult,
        error: str | None = None,
    ) -> int:
        finished = None if status is ActivationStatus.ACTIVATING else utcnow()
        row = ActivationRow(
            collection=catalogue.name,
            model_id=model_id,
            previous_model_id=catalogue.model_id,
            kind=kind,
            requested_by=requested_by[:128],
            status=status.value,
            gate=gate.as_dict(),
            error=error or (gate.reason if status is ActivationStatus.REFUSED else None),
            finished_at=finished,
        )
        with self.db.session() as session:
            session.add(row)
            session.commit()
            return row.seq

    def _progress(self, seq: int, done: int, total: int) -> None:
        with self.db.session() as session:
            session.execute(
                update(ActivationRow).where(ActivationRow.seq == seq).values(done=done, total=total)
            )
            session.commit()

    @staticmethod
    def _finish(session: Session, seq: int, status: ActivationStatus, error: str | None = None) -> None:
        values: dict[str, Any] = {"status": status.value, "finished_at": utcnow(), "error": error}
        if status is ActivationStatus.ACTIVE:
            values["done"] = ActivationRow.total
        session.execute(update(ActivationRow).where(ActivationRow.seq == seq).values(**values))

    def _fail(self, catalogue: Catalogue, model_id: str, seq: int, error: str) -> None:
        """Record the failure, and drop what the run stored unless the model still serves or is kept."""
        with self.db.session() as session:
            self._finish(session, seq, ActivationStatus.FAILED, error[:2000])
            row = session.get(CollectionRow, catalogue.name)
            if row is not None and model_id not in (row.model_id, row.previous_model_id):
                in_collection = select(ItemRow.key).where(ItemRow.collection == catalogue.name)
                session.execute(
                    EmbeddingRow.__table__.delete().where(
                        EmbeddingRow.key.in_(in_collection), EmbeddingRow.model_id == model_id
                    )
                )
            session.commit()

    def history(self, collection: str, limit: int = 100) -> list[dict[str, Any]]:
        with self.db.session() as session:
            rows = session.scalars(
                select(ActivationRow)
                .where(ActivationRow.collection == collection)
                .order_by(ActivationRow.seq.desc())
                .limit(limit)
            )
            return [history_view(row) for row in rows]

    def latest(
        self, *, collection: str | None = None, model_id: str | None = None, requested_by: str | None = None
    ) -> dict[str, Any] | None:
        """The newest history entry matching the given fields."""
        query = select(ActivationRow).order_by(ActivationRow.seq.desc()).limit(1)
        if collection is not None:
            query = query.where(ActivationRow.collection == collection)
        if model_id is not None:
            query = query.where(ActivationRow.model_id == model_id)
        if requested_by is not None:
            query = query.where(ActivationRow.requested_by == requested_by)
        with self.db.session() as session:
            row = session.scalar(query)
            return history_view(row) if row is not None else None

    def interrupted_by_restart(self) -> None:
        """Activations a restart cut short end ``failed`` (the old model serves on), and the embeddings they
        had stored for the new model go, unless it still serves or is the rollback target."""
        with self.db.session() as session:
            cut = session.execute(
                select(ActivationRow.collection, ActivationRow.model_id).where(
                    ActivationRow.status == ActivationStatus.ACTIVATING.value
                )
            ).all()
            for collection, model_id in cut:
                row = session.get(CollectionRow, collection)
                if row is not None and model_id not in (row.model_id, row.previous_model_id):
                    keep = [m for m in (row.model_id, row.previous_model_id) if m]
                    items.drop_other_embeddings(session, collection, keep)
            session.execute(
                update(ActivationRow)
                .where(ActivationRow.status == ActivationStatus.ACTIVATING.value)
                .values(
                    status=ActivationStatus.FAILED.value,
                    error="interrupted by a restart",
                    finished_at=utcnow(),
                )
            )
            session.commit()


def history_view(row: ActivationRow) -> dict[str, Any]:
    return {
        "seq": row.seq,
        "collection": row.collection,
        "model": row.model_id,
        "previous_model": row.previous_model_id,
        "kind": row.kind,
        "requested_by": row.requested_by,
        "status": row.status,
        "gate": row.gate,
        "error": row.error,
        "done": row.done,
        "total": row.total,
        "started_at": row.started_at,
        "finished_at": row.finished_at,
    }
