"""Model registry: list, show, activate in the default collection, and the training report's files."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Path, Response
from fastapi.responses import FileResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from service.api import docs
from service.api.deps import ServiceDep
from service.errors import ErrorCode, ServiceError
from service.schemas import ActivationOut, ModelOut, ReportOut
from service.state import Service
from service.tables import CollectionRow, ModelRow

router = APIRouter(prefix="/models", tags=["models"])
REPORT_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,120}\.(png|md|json)$")  # no paths, no hidden files
ModelId = Annotated[
    str, Path(description="a registered model's id (GET /models)", openapi_examples=docs.example("digits-1"))
]
FileName = Annotated[
    str,
    Path(
        description="a file of the model directory: a plot (*.png), report.md or model.json",
        openapi_examples=docs.example("report.md"),
    ),
]
NO_REPORT = docs.Problem(404, "the model has no report", "model digits-1 has no report.md")
NO_FILE = docs.Problem(404, "no such report file", "model digits-1 has no file 'roc.svg'")
FILE_TYPES = {
    "image/png": {"schema": {"type": "string", "format": "binary"}},
    "text/markdown": {"schema": {"type": "string"}},
    "application/json": {"schema": {"type": "object"}},
}


def model_view(service: Service, row: ModelRow, serving: list[str]) -> dict[str, Any]:
    return {
        "id": row.id,
        "path": service.settings.paths.relative(row.path),
        "active": "default" in serving,
        "collections": serving,
        "created_at": row.created_at,
        "card": row.card,
        "activation": service.activations.latest(model_id=row.id),
    }


def _serving(service: Service) -> dict[str, list[str]]:
    with service.db.session() as session:
        pairs = session.execute(
            select(CollectionRow.model_id, CollectionRow.name).order_by(CollectionRow.name)
        )
        out: dict[str, list[str]] = {}
        for model_id, name in pairs:
            if model_id is not None:
                out.setdefault(model_id, []).append(name)
        return out


@router.get("", response_model=list[ModelOut], summary="List models", responses=docs.errors())
def read_models(service: ServiceDep) -> list[dict[str, Any]]:
    """Registered models, newest first, with the collections each one serves."""
    serving = _serving(service)
    return [model_view(service, row, serving.get(row.id, [])) for row in service.models.rows()]


@router.get(
    "/{model_id}", response_model=ModelOut, summary="Read a model", responses=docs.errors(docs.UNKNOWN_MODEL)
)
def read_model(model_id: ModelId, service: ServiceDep) -> dict[str, Any]:
    """One registered model, with its latest activation (progress, or why it failed)."""
    return model_view(service, service.models.row(model_id), _serving(service).get(model_id, []))


@router.post(
    "/{model_id}/activate",
    response_model=ActivationOut,
    status_code=202,
    summary="Activate a model in default",
    responses={
        200: {"model": ActivationOut, "description": "The model was already active: nothing to do"},
        **docs.errors(
            docs.UNKNOWN_MODEL,
            docs.GATE_REFUSED,
            docs.ACTIVATING,
            docs.UNREADABLE_ITEMS,
            docs.UNLOADABLE_MODEL,
        ),
    },
)
async def activate_model(model_id: ModelId, service: ServiceDep, response: Response) -> dict[str, str]:
    """Activate in the default collection (``POST /collections/{name}/activate`` for the others); 202
    while re-embedding, 200 if already active; 409 if it cannot read the items or the gate refuses it."""
    outcome = await run_in_threadpool(
        service.activations.start, service.collections.default, model_id, requested_by="request"
    )
    if outcome["status"] == "active":
        response.status_code = 200
    else:
        response.headers["Location"] = f"/models/{model_id}"
    return {"id": model_id, "status": outcome["status"]}


@router.get(
    "/{model_id}/report",
    response_model=ReportOut,
    summary="Read a model's training report",
    responses=docs.errors(docs.UNKNOWN_MODEL, NO_REPORT),
)
def read_report(model_id: ModelId, service: ServiceDep) -> dict[str, Any]:
    """The training report (markdown) and the URLs of its plots."""
    path = service.models.directory(model_id)
    report = path / "report.md"
    if not report.is_file():
        raise ServiceError(ErrorCode.NOT_FOUND, f"model {model_id} has no report.md")
    files = sorted(p.name for p in path.iterdir() if p.is_file() and REPORT_FILE.match(p.name))
    return {
        "model_id": model_id,
        "markdown": report.read_text(encoding="utf-8"),
        "files": {name: f"/models/{model_id}/files/{name}" for name in files},
    }


@router.get(
    "/{model_id}/files/{name}",
    response_class=FileResponse,
    summary="Read a file of a model's report",
    responses={
        200: {"description": "The file", "content": FILE_TYPES},
        **docs.errors(docs.UNKNOWN_MODEL, NO_FILE),
    },
)
def read_model_file(model_id: ModelId, name: FileName, service: ServiceDep) -> FileResponse:
    """One file of a model directory: its plots, report.md or model.json (never the encoder)."""
    path = service.models.directory(model_id) / name
    if not REPORT_FILE.match(name) or not path.is_file():
        raise ServiceError(ErrorCode.NOT_FOUND, f"model {model_id} has no file {name!r}")
    return FileResponse(path)
