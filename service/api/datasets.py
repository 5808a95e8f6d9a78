"""Data set uploads for training: POST a .npz or .csv, list them, show one (``service.datasets`` stores)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, UploadFile
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from service import datasets
from service.api.deps import ServiceDep, SessionDep
from service.errors import ErrorCode, ServiceError
from service.schemas import DatasetOut
from service.tables import DatasetRow

router = APIRouter(prefix="/datasets", tags=["datasets"])


@router.post("", response_model=DatasetOut, status_code=201)
async def create_dataset(
    service: ServiceDep, file: UploadFile, label_column: Annotated[str, Form()] = "label"
) -> dict[str, Any]:
    """Upload a .npz (x, y[, label_names]) or .csv (features + label column) data set for POST /train."""
    return await run_in_threadpool(datasets.store_upload, service, file, label_column)


@router.get("", response_model=list[DatasetOut])
def read_datasets(session: SessionDep) -> list[dict[str, Any]]:
    """Uploaded data sets, newest first."""
    return [
        datasets.dataset_view(r)
        for r in session.scalars(select(DatasetRow).order_by(DatasetRow.created_at.desc()))
    ]


@router.get("/{dataset_id}", response_model=DatasetOut)
def read_dataset(dataset_id: str, session: SessionDep) -> dict[str, Any]:
    """One uploaded data set."""
    row = session.get(DatasetRow, dataset_id)
    if row is None:
        raise ServiceError(ErrorCode.NOT_FOUND, f"no uploaded data set with id {dataset_id!r}")
    return datasets.dataset_view(row)
