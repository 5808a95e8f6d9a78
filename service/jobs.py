"""The training-job queue: plain SQL on the ``jobs`` table, shared by the service and the workers.

Only SQLAlchemy here (no FastAPI, no torch): the server and ``python -m service worker`` both use it.
Every state change is one conditional UPDATE (``... WHERE status = 'queued'``) checked by its
row count, which is what makes claiming atomic on SQLite and on PostgreSQL alike: two workers
racing for the same job both issue the UPDATE, and only one of them changes a row.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from service.tables import JobRow

logger = logging.getLogger(__name__)


class JobStatus(StrEnum):
    """The one vocabulary of a job's ``status``."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = JobStatus
PENDING = (QUEUED, RUNNING)
CANCELLING = "cancelling"  # shown, never stored: a running job that was asked to stop
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})
ITEMS_SPEC = "items"  # dataset_spec of a job that trains on a collection's labelled items: items[:name]
LOG_TAIL_CHARS = 8000


def items_spec(collection: str) -> str:
    return f"{ITEMS_SPEC}:{collection}"


def items_collection(spec: str) -> str | None:
    """The collection whose items a dataset spec names (``items`` alone: the default), else None."""
    if spec == ITEMS_SPEC:
        return "default"
    return spec.removeprefix(ITEMS_SPEC + ":") if spec.startswith(ITEMS_SPEC + ":") else None


class JobStateError(Exception):
    """The job is not in a state that allows the operation (e.g. cancelling a finished job)."""


def new_job_id() -> str:
    return "job-" + secrets.token_hex(8)


def now() -> datetime:
    return datetime.now(UTC)


def enqueue(
    session: Session,
    *,
    job_id: str,
    config: dict[str, Any],
    dataset_spec: str,
    model_id: str,
    activate: bool,
    collection: str = "default",
    test_dataset_spec: str | None = None,
    force: bool = False,
) -> JobRow:
    job = JobRow(
        id=job_id,
        status=QUEUED,
        config=config,
        dataset_spec=dataset_spec,
        test_dataset_spec=test_dataset_spec,
        model_id=model_id,
        collection=collection,
        activate=activate,
        force=force,
        progress={},
        metrics=[],
        log="",
    )
    session.add(job)
    try:
        session.commit()
    except Exception:
        session.rollback()
        raise
    return job


def claim_next(sessions: sessionmaker[Session], worker_id: str) -> JobRow | None:
    """Take the oldest queued job for ``worker_id``, or None when the queue is empty."""
    for _ in range(10):  # lost races retry with the next oldest job
        with sessions() as session:
            seq = session.scalar(
                select(JobRow.seq).where(JobRow.status == QUEUED).order_by(JobRow.seq).limit(1)
            )
            if seq is None:
                return None
            t = now()
            claimed = session.execute(
                update(JobRow)
                .where(JobRow.seq == seq, JobRow.status == QUEUED)
                .values(
                    status=RUNNING,
                    worker_id=worker_id,
                    started_at=func.coalesce(JobRow.started_at, t),
                    heartbeat_at=t,
                    attempts=JobRow.attempts + 1,
                )
                .execution_options(synchronize_session=False)
            ).rowcount
            session.commit()
            if claimed == 1:
                return session.scalars(select(JobRow).where(JobRow.seq == seq)).one()
    return None


def heartbeat(sessions: sessionmaker[Session], job_id: str, worker_id: str) -> tuple[bool, bool]:
    """Refresh the heartbeat; returns ``(still_ours, cancel_requested)``."""
    with sessions() as session:
        owned = session.execute(
            update(JobRow)
            .where(JobRow.id == job_id, JobRow.worker_id == worker_id, JobRow.status == RUNNING)
            .values(heartbeat_at=now())
            .execution_options(synchronize_session=False)
        ).rowcount
        session.commit()
        cancel = bool(session.scalar(select(JobRow.cancel_requested).where(JobRow.id == job_id)))
    return owned == 1, cancel


def record_progress(
    sessions: sessionmaker[Session],
    job_id: str,
    worker_id: str,
    progress: dict[str, Any],
    *,
    epoch_record: dict[str, Any] | None = None,
    log: str | None = None,
) -> None:
    """Store the latest progress (and an epoch's metrics); ignored if the job is no longer ours."""
    with sessions() as session:
        job = session.scalars(
            select(JobRow).where(JobRow.id == job_id, JobRow.worker_id == worker_id, JobRow.status == RUNNING)
        ).one_or_none()
        if job is None:
            return
        job.progress = progress
        job.heartbeat_at = now()
        if epoch_record is not None:
            # A resumed run replays no epochs, but a re-run of a killed epoch replaces its record.
            job.metrics = [m for m in job.metrics if m.get("epoch") != epoch_record.get("epoch")] + [
                epoch_record
            ]
        if log is not None:
            job.log = log[-LOG_TAIL_CHARS:]
        session.commit()


def finish(
    sessions: sessionmaker[Session],
    job_id: str,
    worker_id: str,
    status: str,
    *,
    error: str | None = None,
    result: dict[str, Any] | None = None,
    log: str | None = None,
) -> bool:
    """Move a running job of ours to a terminal status; False if it was taken from us meanwhile."""
    values: dict[str, Any] = {"status": status, "finished_at": now(), "error": error, "result": result}
    if status == SUCCEEDED:
        values["activation"] = case((JobRow.activate, "pending"), else_=None)
    if log is not None:
        values["log"] = log[-LOG_TAIL_CHARS:]
    with sessions() as session:
        changed = session.execute(
            update(JobRow)
            .where(JobRow.id == job_id, JobRow.worker_id == worker_id, JobRow.status == RUNNING)
            .values(**values)
            .execution_options(synchronize_session=False)
        ).rowcount
        session.commit()
    return changed == 1


def cancel_requested(sessions: sessionmaker[Session], job_id: str) -> bool:
    with sessions() as session:
        return bool(session.scalar(select(JobRow.cancel_requested).where(JobRow.id == job_id)))


def request_cancel(session: Session, job_id: str) -> JobRow:
    """Cancel a queued job at once; ask a running one to stop at its next step. Terminal: an error."""
    cancelled = session.execute(
        update(JobRow)
        .where(JobRow.id == job_id, JobRow.status == QUEUED)
        .values(
            status=CANCELLED, finished_at=now(), cancel_requested=True, error="cancelled before it started"
        )
        .execution_options(synchronize_session=False)
    ).rowcount
    asked = session.execute(
        update(JobRow)
        .where(JobRow.id == job_id, JobRow.status == RUNNING)
        .values(cancel_requested=True)
        .execution_options(synchronize_session=False)
    ).rowcount
    session.commit()
    job = session.scalars(select(JobRow).where(JobRow.id == job_id)).one()
    session.refresh(job)
    if not (cancelled or asked):
        raise JobStateError(
            f"job {job_id} already {job.status}; only queued or running jobs can be cancelled"
        )
    return job


def _release(
    session: Session, job: JobRow, reason: str, max_attempts: int, *conditions: Any, graceful: bool = False
) -> str | None:
    """Give a running job back to the queue (to resume from its checkpoint) or fail it for good.

    The UPDATE repeats the conditions under which the job was found, so a job that another reaper
    released, or a worker claimed, in the meantime is left alone (None is returned).
    """
    values: dict[str, Any] = {"worker_id": None}
    if job.cancel_requested:
        values.update(status=CANCELLED, error=f"cancelled ({reason})", finished_at=now())
    elif graceful or job.attempts < max_attempts:
        note = f"\n[service] {reason}; re-queued to resume from its last checkpoint\n"
        values.update(status=QUEUED, log=((job.log or "") + note)[-LOG_TAIL_CHARS:])
        if graceful:  # a worker that was asked to stop has not failed: this run does not count
            values["attempts"] = JobRow.attempts - 1
    else:
        values.update(
            status=FAILED, error=f"{reason}; gave up after {job.attempts} attempt(s)", finished_at=now()
        )
    changed = session.execute(
        update(JobRow)
        .where(JobRow.id == job.id, JobRow.status == RUNNING, *conditions)
        .values(**values)
        .execution_options(synchronize_session=False)
    ).rowcount
    session.commit()
    if not changed:
        return None
    logger.warning("job %s: %s -> %s", job.id, reason, values["status"])
    return str(values["status"])


def reap_stale(sessions: sessionmaker[Session], stale_after_s: float, max_attempts: int) -> list[str]:
    """Release running jobs whose worker stopped heartbeating; returns their ids."""
    cutoff = now() - timedelta(seconds=stale_after_s)
    released = []
    with sessions() as session:
        stale = session.scalars(
            select(JobRow).where(JobRow.status == RUNNING, JobRow.heartbeat_at < cutoff)
        ).all()
        for job in stale:
            reason = (
                f"worker {job.worker_id} stopped heartbeating "
                f"(last beat {job.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC, more than {stale_after_s:g} s ago)"
            )
            if _release(session, job, reason, max_attempts, JobRow.heartbeat_at < cutoff):
                released.append(job.id)
    return released


def release_worker(
    sessions: sessionmaker[Session], worker_id: str, reason: str, max_attempts: int, graceful: bool = False
) -> list[str]:
    """Release the running jobs of a worker that died (``graceful``: that was asked to stop)."""
    released = []
    with sessions() as session:
        jobs = session.scalars(
            select(JobRow).where(JobRow.status == RUNNING, JobRow.worker_id == worker_id)
        ).all()
        for job in jobs:
            if _release(session, job, reason, max_attempts, JobRow.worker_id == worker_id, graceful=graceful):
                released.append(job.id)
    return released


def shown_status(job: JobRow) -> str:
    """The status an answer shows: ``cancelling`` for a running job asked to stop, else the stored one."""
    return CANCELLING if job.status == RUNNING and job.cancel_requested else job.status


def shown_error(job: JobRow) -> str | None:
    """The job's error; for a job that trained its model but could not activate it, why not."""
    activation = job.activation or ""
    for outcome, words in (("failed", "activating it failed"), ("refused", "the promotion gate refused it")):
        if job.status == SUCCEEDED and activation.startswith(outcome):
            reason = activation.removeprefix(outcome).lstrip(": ") or "no reason given"
            retry = f'POST /collections/{job.collection}/activate {{"model": "{job.model_id}"}}'
            return f"the model {job.model_id} was trained and registered, but {words}: {reason} ({retry})"
    return job.error


def job_view(job: JobRow, hide: Callable[[str], str] = str) -> dict[str, Any]:
    """The JSON shape of a job for the API; ``hide`` cleans free text (error, log) of server paths."""
    error = shown_error(job)
    return {
        "id": job.id,
        "status": shown_status(job),
        "model_id": job.model_id,
        "dataset": job.dataset_spec,
        "test_dataset": job.test_dataset_spec,
        "config": job.config,
        "collection": job.collection,
        "activate": job.activate,
        "force": job.force,
        "activation": job.activation,
        "progress": job.progress or {},
        "metrics": job.metrics or [],
        "result": job.result,
        "error": None if error is None else hide(error),
        "log": hide(job.log or ""),
        "attempts": job.attempts,
        "worker_id": job.worker_id,
        "cancel_requested": job.cancel_requested,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "heartbeat_at": job.heartbeat_at,
    }
