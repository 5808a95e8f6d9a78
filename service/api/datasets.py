"""Data set uploads for training: ``.npz`` / ``.csv`` files, validated before they are kept."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Form, UploadFile
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from service.api.deps import ServiceDep, SessionDep
from service.errors import ErrorCode, ServiceError
from service.schemas import DatasetOut
from service.state import Service
from service.tables import DatasetRow
from trainer.data import DataError, Dataset, load_dataset

router = APIRouter(prefix="/datasets", tags=["datasets"])
UPLOAD_SUFFIXES = (".npz", ".csv")
ORIGINAL_NAME_CHARS = DatasetRow.__table__.c.original_name.type.length  # the column holding it
UNPACKED_FACTOR = 4  # a compressed .npz may unpack to this many times the upload limit, no more


def _store_upload(service: Service, upload: UploadFile, label_column: str) -> dict[str, Any]:
    """Copy the upload beside its final place, load it as the trainer would, then rename it in."""
    name = Path(upload.filename or "").name
    suffix = Path(name).suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        raise ServiceError(
            ErrorCode.INVALID_REQUEST, f"file: {name or 'the upload'!r} is not a .npz or .csv data set"
        )
    if len(name) > ORIGINAL_NAME_CHARS:  # PostgreSQL enforces the size, SQLite would not
        raise ServiceError(
            ErrorCode.INVALID_REQUEST, f"file: a name longer than {ORIGINAL_NAME_CHARS} characters"
        )
    folder = service.settings.paths.datasets
    folder.mkdir(parents=True, exist_ok=True)
    dataset_id = "ds-" + secrets.token_hex(6)
    fd, tmp_name = tempfile.mkstemp(prefix=".upload-", suffix=suffix, dir=folder)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(upload.file, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        _check_unpacked_size(tmp, UNPACKED_FACTOR * service.settings.max_upload_bytes)
        try:
            data = load_dataset(str(tmp), label_column=label_column)
        except DataError as exc:
            message = str(exc).replace(str(tmp), name).replace(tmp.name, name)
            raise ServiceError(ErrorCode.INVALID_REQUEST, f"file: {message}") from exc
        if suffix == ".csv":  # kept as .npz: exactly what was validated, no label column to remember
            tmp.unlink()
            tmp = tmp.with_suffix(".npz")
            _write_npz(tmp, data)
            suffix = ".npz"
        final = folder / f"{dataset_id}{suffix}"
        tmp.chmod(0o644)  # mkstemp makes it private; a worker may run as another user
        row = DatasetRow(
            id=dataset_id,
            filename=final.name,
            original_name=name,
            n=len(data),
            classes=list(data.label_names),
            shape=list(data.x.shape[1:]),
            size_bytes=tmp.stat().st_size,
        )
        os.replace(tmp, final)
        try:
            with service.db.session() as session:
                session.add(row)
                session.commit()
                session.refresh(row)
        except BaseException:
            final.unlink(missing_ok=True)  # no file without its row
            raise
    finally:
        tmp.unlink(missing_ok=True)
    return _view(row)


def _write_npz(path: Path, data: Dataset) -> None:
    with path.open("wb") as out:
        np.savez(out, x=data.x, y=data.y, label_names=np.asarray(data.label_names))
        out.flush()
        os.fsync(out.fileno())


def _check_unpacked_size(path: Path, limit: int) -> None:
    """Refuse a .npz whose arrays would unpack to more than ``limit`` bytes (a zip bomb)."""
    if path.suffix != ".npz":
        return
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(member.file_size for member in archive.infolist())
    except (zipfile.BadZipFile, OSError):
        return  # not a zip: np.load reports what is wrong with it
    if unpacked > limit:
        raise ServiceError(
            ErrorCode.TOO_LARGE,
            f"file: its arrays unpack to {unpacked} bytes, more than {limit} "
            f"({UNPACKED_FACTOR} x --max-upload-bytes)",
        )


def _view(row: DatasetRow) -> dict[str, Any]:
    return {c: getattr(row, c) for c in DatasetOut.model_fields}


@router.post("", response_model=DatasetOut, status_code=201)
async def create_dataset(
    service: ServiceDep, file: UploadFile, label_column: Annotated[str, Form()] = "label"
) -> dict[str, Any]:
    """Upload a .npz (x, y[, label_names]) or .csv (features + label column) data set for POST /train."""
    return await run_in_threadpool(_store_upload, service, file, label_column)


@router.get("", response_model=list[DatasetOut])
def read_datasets(session: SessionDep) -> list[dict[str, Any]]:
    """Uploaded data sets, newest first."""
    return [_view(r) for r in session.scalars(select(DatasetRow).order_by(DatasetRow.created_at.desc()))]


@router.get("/{dataset_id}", response_model=DatasetOut)
def read_dataset(dataset_id: str, session: SessionDep) -> dict[str, Any]:
    """One uploaded data set."""
    row = session.get(DatasetRow, dataset_id)
    if row is None:
        raise ServiceError(ErrorCode.NOT_FOUND, f"no uploaded data set with id {dataset_id!r}")
    return _view(row)
