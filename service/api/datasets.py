"""Data set uploads for training: POST a .npz or .csv, list them, show one (``service.datasets`` stores)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile
from fastapi import Path as PathParam
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from service import datasets
from service.api import docs
from service.api.deps import ServiceDep, SessionDep
from service.errors import ErrorCode, ServiceError
from service.schemas import DatasetOut
from service.tables import DatasetRow

router = APIRouter(prefix="/datasets", tags=["datasets"])
NOT_A_DATASET = docs.Problem(
    422, "a file that is not a usable data set", "file: 'faces.zip' is not a .npz or .csv data set"
)
NO_FILE = docs.Problem(
    422, "no file in the form", docs.field_error(["body", "file"], "missing", "Field required", None)
)
BAD_FORM = docs.Problem(400, "a body that is not multipart/form-data", "Invalid multipart data.")
UNKNOWN_DATASET = docs.Problem(
    404, "an unknown data set id", "no uploaded data set with id 'ds-0123456789ab'"
)


@router.post(
    "",
    response_model=DatasetOut,
    status_code=201,
    summary="Upload a data set",
    responses=docs.errors(BAD_FORM, docs.UPLOAD_TOO_LARGE, docs.UNPACKS_TOO_FAR, NOT_A_DATASET, NO_FILE),
)
async def create_dataset(
    service: ServiceDep,
    file: Annotated[
        UploadFile,
        File(description=".npz with x, y[, label_names], or .csv with feature columns and a label column"),
    ],
    label_column: Annotated[
        str,
        Form(description="the label column of a .csv", examples=["label"]),
    ] = "label",
) -> dict[str, Any]:
    """Upload a .npz (x, y[, label_names]) or .csv (features + label column) data set for POST /train."""
    return await run_in_threadpool(datasets.store_upload, service, file, label_column)


@router.get("", response_model=list[DatasetOut], summary="List uploaded data sets", responses=docs.errors())
def read_datasets(session: SessionDep) -> list[dict[str, Any]]:
    """Uploaded data sets, newest first."""
    return [
        datasets.dataset_view(r)
        for r in session.scalars(select(DatasetRow).order_by(DatasetRow.created_at.desc()))
    ]


@router.get(
    "/{dataset_id}",
    response_model=DatasetOut,
    summary="Read an uploaded data set",
    responses=docs.errors(UNKNOWN_DATASET),
)
def read_dataset(
    dataset_id: Annotated[
        str,
        PathParam(
            description="an uploaded data set's id (GET /datasets)",
            openapi_examples=docs.example("ds-0123456789ab"),
        ),
    ],
    session: SessionDep,
) -> dict[str, Any]:
    """One uploaded data set."""
    row = session.get(DatasetRow, dataset_id)
    if row is None:
        raise ServiceError(ErrorCode.NOT_FOUND, f"no uploaded data set with id {dataset_id!r}")
    return datasets.dataset_view(row)
