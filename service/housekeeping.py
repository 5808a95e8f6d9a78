"""Housekeeping inside the server, every second, in a thread (``run_maintenance_loop``):

* re-queue (or fail) jobs whose heartbeat went stale, which covers workers in other processes or hosts;
* activate the models of finished jobs that asked for it, in their collection, through the promotion gate,
  and follow each activation to its outcome on the job (``active``, ``failed: ...``, ``refused: ...``);
* remove the checkpoints of jobs that ended;
* prune the removals log that replicas follow, past ``--removal-retention``.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from datetime import timedelta

from sqlalchemy import delete, func, select, update

from service import jobs
from service.activation import ActivationStatus, GateRefused
from service.errors import ServiceError
from service.state import Service
from service.tables import CollectionRow, JobRow, RemovalRow, utcnow

logger = logging.getLogger(__name__)


def maintain_jobs(service: Service) -> None:
    """One housekeeping pass (blocking)."""
    s = service.settings
    jobs.reap_stale(service.db.sessions, s.job_stale_after, s.job_max_attempts)
    follow_job_activations(service)
    remove_finished_run_dirs(service)
    prune_removals(service)


def remove_finished_run_dirs(service: Service) -> None:
    """Checkpoints of jobs that ended (failed or cancelled while no worker held them) are garbage."""
    runs = service.settings.paths.runs
    if not runs.is_dir():
        return
    names = [p.name for p in runs.iterdir() if p.is_dir()]
    if not names:
        return
    with service.db.session() as session:
        finished = set(
            session.scalars(select(JobRow.id).where(JobRow.id.in_(names), JobRow.status.in_(jobs.TERMINAL)))
        )
    for name in finished:
        shutil.rmtree(service.settings.paths.run_dir(name), ignore_errors=True)


def _set_activation(service: Service, job_id: str, value: str) -> None:
    with service.db.session() as session:
        session.execute(update(JobRow).where(JobRow.id == job_id).values(activation=value[:1000]))
        session.commit()


def follow_job_activations(service: Service) -> None:
    with service.db.session() as session:
        waiting = session.execute(
            select(JobRow.id, JobRow.model_id, JobRow.collection, JobRow.activation, JobRow.force)
            .where(
                JobRow.status == jobs.SUCCEEDED,
                JobRow.activation.in_([ActivationStatus.PENDING, ActivationStatus.ACTIVATING]),
            )
            .order_by(JobRow.seq)
        ).all()
    for job_id, model_id, collection, activation, force in waiting:
        by = f"job {job_id}"
        if activation == ActivationStatus.ACTIVATING:
            entry = service.activations.latest(requested_by=by)
            status = entry["status"] if entry else ActivationStatus.FAILED
            if status == ActivationStatus.ACTIVE:
                _set_activation(service, job_id, ActivationStatus.ACTIVE)
            elif status != ActivationStatus.ACTIVATING:
                reason = (entry or {}).get("error") or "the activation was interrupted"
                _set_activation(service, job_id, f"{status}: {reason}")
            continue
        try:
            catalogue = service.collections.get(collection)
            if catalogue.activation_mutex.locked():
                continue  # another activation runs there; try again next pass
            service.models.register_dir(
                service.settings.paths.model_dir(model_id)
            )  # checks the worker's files
            outcome = service.activations.start(catalogue, model_id, force=force, requested_by=by)
        except GateRefused as exc:
            _set_activation(service, job_id, f"{ActivationStatus.REFUSED}: {exc.gate.reason}")
            continue
        except ServiceError as exc:
            if catalogue.activation_mutex.locked():
                continue  # a user's activation started in between; try again next pass
            _set_activation(service, job_id, f"{ActivationStatus.FAILED}: {exc.detail}")
            continue
        except Exception as exc:  # noqa: BLE001 - an unusable model must not stop housekeeping
            _set_activation(service, job_id, f"{ActivationStatus.FAILED}: {exc}")
            continue
        _set_activation(service, job_id, outcome["status"])
        logger.info("job %s: activating model %s in collection %s", job_id, model_id, collection)


def prune_removals(service: Service) -> None:
    """Drop removals older than the retention; a replica that had not read them resyncs in full."""
    cutoff = utcnow() - timedelta(seconds=service.settings.removal_retention)
    with service.db.session() as session:
        floors = session.execute(
            select(RemovalRow.collection, func.max(RemovalRow.seq))
            .where(RemovalRow.at < cutoff)
            .group_by(RemovalRow.collection)
        ).all()
        for collection, floor in floors:
            session.execute(
                delete(RemovalRow).where(RemovalRow.collection == collection, RemovalRow.seq <= floor)
            )
            session.execute(
                update(CollectionRow).where(CollectionRow.name == collection).values(removed_floor=floor)
            )
        session.commit()


def run_maintenance_loop(service: Service, stop: threading.Event, interval: float = 1.0) -> None:
    """Thread body: ``maintain_jobs`` every ``interval`` seconds until ``stop`` is set."""
    while not stop.wait(interval):
        started = time.monotonic()
        try:
            maintain_jobs(service)
        except Exception:  # noqa: BLE001 - keep going; the database is the source of truth
            logger.exception("housekeeping failed")
        if time.monotonic() - started > 5:
            logger.warning("housekeeping took %.1f s", time.monotonic() - started)
