"""``python -m service worker``: claims queued training jobs from the database and runs them.

The worker belongs to the service (it reads the service's tables) and calls the trainer as a library.
It shares the data directory with the server: models are written to ``<data-dir>/models/<model_id>/``
and registered in the ``models`` table, where the server finds them (and activates them when the job
asked for it). A heartbeat thread keeps the job's ``heartbeat_at`` fresh and picks up cancellation
requests; the progress callback turns those into ``Cancelled`` at the next training step.

A job that comes back after its worker died (re-queued by the stale-job reaper) resumes from the
checkpoint in ``<data-dir>/models/.runs/<job_id>/`` (per job id, see ``service.paths``).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import threading
import time
import traceback
from collections import deque
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import make_url, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from service import jobs
from service.config import WorkerSettings
from service.db import Database
from service.tables import ItemRow, JobRow, ModelRow
from trainer.card import CARD_FILE, read_card
from trainer.config import TrainConfig, foreign_loss_fields
from trainer.data import DataError, Dataset, dataset_from_arrays, dataset_from_images, load_dataset
from trainer.train import CHECKPOINT_FILE, Cancelled, Progress, TrainError, train

log = logging.getLogger(__name__)


def without_foreign_loss_fields(job: JobRow) -> dict[str, Any]:
    """A job queued before parameters of another loss were refused: drop them (they were ignored then)."""
    loss = job.config.get("loss")
    foreign = foreign_loss_fields(loss, job.config)
    if foreign:
        log.info("job %s: ignoring %s, not parameters of loss %r", job.id, ", ".join(foreign), loss)
    return {k: v for k, v in job.config.items() if k not in foreign}


class Stopped(Exception):  # noqa: N818 - a signal, not an error
    """The worker is shutting down (SIGTERM) or lost the job; the job goes back to the queue."""


def items_dataset(sessions: sessionmaker[Session], collection: str) -> Dataset:
    """A collection's labelled items as a data set (vectors, or images decoded from their files)."""
    with sessions() as session:
        rows = session.execute(
            select(ItemRow.label, ItemRow.input_kind, ItemRow.input_data)
            .where(ItemRow.collection == collection, ItemRow.label.is_not(None))
            .order_by(ItemRow.key)
        ).all()
    if not rows:
        raise DataError(f"collection {collection!r} holds no labelled items to train on")
    kinds = {kind for _, kind, _ in rows}
    if len(kinds) > 1:
        raise DataError("the labelled items mix vectors and images; train on one kind at a time")
    labels = [label for label, _, _ in rows]
    if kinds == {"vector"}:
        vectors = [np.frombuffer(data, dtype=np.float32) for _, _, data in rows]
        if len({len(v) for v in vectors}) > 1:
            raise DataError("the labelled items have vectors of different lengths")
        return dataset_from_arrays(np.stack(vectors), np.array(labels), name=f"items:{collection}")
    from PIL import Image

    images = []
    for _, _, data in rows:
        with Image.open(BytesIO(data)) as img:
            img.load()
            images.append(img.copy())
    return dataset_from_images(images, labels, name=f"items:{collection}")


class LogTail(logging.Handler):
    """Keeps the last lines logged while a job runs, for the job's ``log`` field."""

    def __init__(self, previous: str = "", lines: int = 200) -> None:
        super().__init__(logging.INFO)
        # A resumed job keeps the log of its earlier attempts (and the service's note on why it resumed).
        self.lines: deque[str] = deque(previous.splitlines(), maxlen=lines)
        # UTC with its zone, as every timestamp the API shows: 2025-01-31T12:00:00.123Z
        formatter = logging.Formatter(
            "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S"
        )
        formatter.converter = time.gmtime
        self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


class Worker:
    def __init__(self, settings: WorkerSettings, worker_id: str | None = None) -> None:
        self.settings = settings
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.paths = settings.paths
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.db = Database(settings.db_url, settings.sqlite_synchronous)
        self.engine, self.sessions = self.db.engine, self.db.sessions
        self.stopping = threading.Event()

    # -- the loop --------------------------------------------------------------------------------
    def run(self, once: bool = False) -> int:
        """Claim and run jobs until stopped (or, with ``once``, until the queue is empty)."""
        shown = make_url(self.settings.db_url).render_as_string(hide_password=True)
        log.info("worker %s polling %s", self.worker_id, shown)
        done = 0
        while not self.stopping.is_set():
            try:
                jobs.reap_stale(self.sessions, self.settings.job_stale_after, self.settings.job_max_attempts)
                job = jobs.claim_next(self.sessions, self.worker_id)
            except SQLAlchemyError:  # a database hiccup must not end a worker nobody restarts
                log.exception("cannot poll the job queue; retrying")
                self.stopping.wait(self.settings.worker_poll_interval)
                continue
            if job is None:
                if once:
                    break
                self.stopping.wait(self.settings.worker_poll_interval)
                continue
            self.run_job(job)
            done += 1
        self.engine.dispose()
        return done

    def run_job(self, job: JobRow) -> None:
        """Run one claimed job to a terminal state (or back to the queue when the worker stops)."""
        tail = LogTail(job.log or "")
        root = logging.getLogger()
        root.addHandler(tail)
        beat = _Heartbeat(self, job.id)
        beat.start()
        status, error, result = jobs.FAILED, None, None
        try:
            log.info(
                "job %s: attempt %d, model %s, data %s", job.id, job.attempts, job.model_id, job.dataset_spec
            )
            result = self._train(job, beat, tail)
            if jobs.cancel_requested(self.sessions, job.id):  # asked during the final evaluation or export
                raise Cancelled
            status = jobs.SUCCEEDED
            log.info("job %s succeeded: model %s", job.id, job.model_id)
        except Cancelled:
            log.info("job %s cancelled", job.id)
            status, error = jobs.CANCELLED, "cancelled"
            self._discard_model(job)
        except Stopped as exc:
            log.info("job %s: %s", job.id, exc)
            graceful = self.stopping.is_set()
            jobs.release_worker(
                self.sessions, self.worker_id, str(exc), self.settings.job_max_attempts, graceful=graceful
            )
            return  # the checkpoint stays for whoever resumes the job
        except (DataError, TrainError, ValueError, FileExistsError) as exc:
            log.error("job %s failed: %s", job.id, exc)
            error = self.paths.scrub(str(exc))
        except Exception as exc:  # noqa: BLE001 - a job must end failed, never stay "running"
            log.error("job %s crashed:\n%s", job.id, traceback.format_exc())
            error = f"internal error: {type(exc).__name__}: {exc}"
        finally:
            beat.stop()
            root.removeHandler(tail)
        if jobs.finish(
            self.sessions, job.id, self.worker_id, status, error=error, result=result, log=tail.text()
        ):
            shutil.rmtree(self.paths.run_dir(job.id), ignore_errors=True)
        else:
            log.warning("job %s was taken from this worker meanwhile; its result is dropped", job.id)

    # -- one job ---------------------------------------------------------------------------------
    def _train(self, job: JobRow, beat: _Heartbeat, tail: LogTail) -> dict[str, float]:
        config = TrainConfig.model_validate({**without_foreign_loss_fields(job), "name": job.model_id})
        if config.device == "auto":
            config = config.model_copy(update={"device": self.settings.worker_device})
        if job.test_dataset_spec is not None:  # resolved at submission, relative to the data dir
            config = config.model_copy(update={"test_dataset": job.test_dataset_spec})
        model_dir = self.paths.model_dir(job.model_id)
        if (model_dir / CARD_FILE).exists():
            # An earlier attempt of this job exported the model and died before recording it.
            written = {k: v for k, v in read_card(model_dir).config.items() if k != "device"}
            if written != config.model_dump(mode="json", exclude={"device"}):
                raise FileExistsError(f"model directory {model_dir} exists and was not written by this job")
        else:
            collection = jobs.items_collection(job.dataset_spec)
            if collection is not None:
                dataset = items_dataset(self.sessions, collection)
            else:
                dataset = load_dataset(
                    job.dataset_spec, root=self.settings.data_dir, label_column=config.label_column
                )
            run_dir = self.paths.run_dir(job.id)
            resume = (run_dir / CHECKPOINT_FILE).exists()
            if resume:
                log.info("job %s: resuming from %s", job.id, run_dir)
            train(
                config,
                out_dir=self.paths.models,
                dataset=dataset,
                data_root=self.settings.data_dir,
                progress=self._progress(job, beat, tail),
                resume=resume,
                run_dir=run_dir,
            )
        card = read_card(model_dir)
        self._register(card.model_id, model_dir, card.model_dump(mode="json"))
        return card.metrics

    def _progress(self, job: JobRow, beat: _Heartbeat, tail: LogTail):  # type: ignore[no-untyped-def]
        last_write = 0.0

        def report(p: Progress) -> None:
            nonlocal last_write
            if beat.cancel_requested:
                raise Cancelled
            if self.stopping.is_set():
                raise Stopped("the worker was stopped; the job goes back to the queue")
            if beat.lost:
                raise Stopped("the job was taken from this worker (its heartbeat went stale)")
            progress = {
                "phase": p.phase,
                "epoch": p.epoch,
                "epochs": p.epochs,
                "step": p.step,
                "steps": p.steps,
            }
            if p.loss is not None:
                progress["loss"] = p.loss
            if p.phase == "epoch":
                log.info(
                    "epoch %d/%d loss %.4f val kNN-5 %.4f",
                    p.epoch,
                    p.epochs,
                    p.loss or 0.0,
                    p.metrics.get("val_knn_5_accuracy", float("nan")),
                )
                record = {k: v for k, v in p.metrics.items() if isinstance(v, int | float)}
                self._record(job, progress, epoch_record=record, log=tail.text())
                last_write = time.monotonic()
            elif time.monotonic() - last_write >= 1.0:  # step updates: at most one write a second
                self._record(job, progress)
                last_write = time.monotonic()

        return report

    def _record(self, job: JobRow, progress: dict[str, Any], **extra: Any) -> None:
        """Progress is informative: a busy database must not fail the training run."""
        try:
            jobs.record_progress(self.sessions, job.id, self.worker_id, progress, **extra)
        except SQLAlchemyError as exc:
            log.warning("job %s: progress not recorded (%s)", job.id, exc.__class__.__name__)

    def _register(self, model_id: str, model_dir: Path, card: dict[str, Any]) -> None:
        with self.sessions() as session:
            row = session.get(ModelRow, model_id)
            if row is None:
                session.add(ModelRow(id=model_id, path=str(model_dir.resolve()), card=card))
                session.commit()

    def _discard_model(self, job: JobRow) -> None:
        """A cancelled job keeps nothing: neither its model directory nor its registration."""
        with self.sessions() as session:
            row = session.get(ModelRow, job.model_id)
            if row is not None and not row.active:
                session.delete(row)
                session.commit()
        shutil.rmtree(self.paths.model_dir(job.model_id), ignore_errors=True)


class _Heartbeat(threading.Thread):
    """Refreshes the job's heartbeat and notices cancellation or loss of the job."""

    def __init__(self, worker: Worker, job_id: str) -> None:
        super().__init__(name=f"heartbeat-{job_id}", daemon=True)
        self.worker, self.job_id = worker, job_id
        self.cancel_requested = False
        self.lost = False
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.worker.settings.worker_heartbeat_interval):
            try:
                owned, cancel = jobs.heartbeat(self.worker.sessions, self.job_id, self.worker.worker_id)
            except Exception:  # noqa: BLE001 - a database hiccup must not kill the job; retry next beat
                log.exception("heartbeat failed")
                continue
            self.cancel_requested |= cancel
            self.lost |= not owned

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=5)


def run_worker(settings: WorkerSettings, once: bool = False) -> int:
    """Entry point: run until SIGTERM/SIGINT; the running job (if any) returns to the queue."""
    worker = Worker(settings)

    def stop(signum: int, _frame: Any) -> None:
        log.info("worker %s: signal %d, stopping", worker.worker_id, signum)
        worker.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return worker.run(once=once)
