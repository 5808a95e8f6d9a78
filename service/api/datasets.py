"""Data set uploads for training: ``.npz`` / ``.csv`` files, validated before they are kept."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, UploadFile
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from service.api.deps import SessionDep, StateDep
from service.errors import ErrorCode, ServiceError
from service.schemas import DatasetOut
from service.state import ServiceState
from service.store import DatasetRow
from trainer.data import DataError, load_dataset

router = APIRouter(prefix="/datasets", tags=["datasets"])
UPLOAD_SUFFIXES = (".npz", ".csv")


def _store_upload(state: ServiceState, upload: UploadFile, label_column: str) -> dict[str, Any]:
    """Copy the upload beside its final place, load it as the trainer would, then rename it in."""
    name = Path(upload.filename or "").name
    suffix = Path(name).suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        raise ServiceError(
            ErrorCode.INVALID_REQUEST, f"file: {name or 'the upload'!r} is not a .npz or .csv data set"
        )
    folder = state.settings.datasets_dir
    folder.mkdir(parents=True, exist_ok=True)
    dataset_id = "ds-" + secrets.token_hex(6)
    fd, tmp_name = tempfile.mkstemp(prefix=".upload-", suffix=suffix, dir=folder)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(upload.file, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        try:
            data = load_dataset(str(tmp), label_column=label_column)
        except DataError as exc:
            raise ServiceError(
                ErrorCode.INVALID_REQUEST, f"file: {str(exc).replace(str(tmp), name)}"
            ) from exc
        final = folder / f"{dataset_id}{suffix}"
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
    finally:
        tmp.unlink(missing_ok=True)
    with state.session() as session:
        session.add(row)
        session.commit()
        session.refresh(row)
    return _view(row)


def _view(row: DatasetRow) -> dict[str, Any]:
    return {c: getattr(row, c) for c in DatasetOut.model_fields}


@router.post("", response_model=DatasetOut, status_code=201)
async def create_dataset(
    state: StateDep, file: UploadFile, label_column: Annotated[str, Form()] = "label"
) -> dict[str, Any]:
    """Upload a .npz (x, y[, label_names]) or .csv (features + label column) data set for POST /train."""
    return await run_in_threadpool(_store_upload, state, file, label_column)


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
