"""Model registry: list, show, activate (re-embeds stored items in the background, then swaps)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import FileResponse
from sqlalchemy import select

from service.api.deps import SessionDep, StateDep
from service.errors import ErrorCode, ServiceError
from service.registry import model_row, start_activation
from service.schemas import ActivationOut, ModelOut, ReportOut
from service.state import ServiceState
from service.store import ModelRow

router = APIRouter(prefix="/models", tags=["models"])


def _relative_path(state: ServiceState, row: ModelRow) -> str:
    """Where the model lives, relative to the data directory: answers never show server paths."""
    path, data_dir = Path(row.path), state.settings.data_dir.resolve()
    return str(path.relative_to(data_dir)) if path.is_relative_to(data_dir) else f"models/{row.id}"


def model_out(state: ServiceState, row: ModelRow) -> dict[str, Any]:
    activation = state.activation if state.activation and state.activation["model_id"] == row.id else None
    return {
        "id": row.id,
        "path": _relative_path(state, row),
        "active": row.active,
        "created_at": row.created_at,
        "activated_at": row.activated_at,
        "card": row.card,
        "activation": activation,
    }


@router.get("", response_model=list[ModelOut])
def read_models(state: StateDep, session: SessionDep) -> list[dict[str, Any]]:
    """Registered models, newest first."""
    rows = session.scalars(select(ModelRow).order_by(ModelRow.created_at.desc())).all()
    return [model_out(state, row) for row in rows]


@router.get("/{model_id}", response_model=ModelOut)
def read_model(model_id: str, state: StateDep) -> dict[str, Any]:
    """One registered model, with the progress of its activation if one ran."""
    return model_out(state, model_row(state, model_id))


@router.post("/{model_id}/activate", response_model=ActivationOut, status_code=202)
def activate_model(model_id: str, state: StateDep, response: Response) -> dict[str, str]:
    """Activate a model: 409 if it cannot read the stored items; 202 while re-embedding, 200 if active."""
    status = start_activation(state, model_id)
    if status == "active":
        response.status_code = 200
    else:
        response.headers["Location"] = f"/models/{model_id}"
    return {"id": model_id, "status": status}


REPORT_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,120}\.(png|md|json)$")  # no paths, no hidden files


def _model_path(state: ServiceState, model_id: str) -> Path:
    path = Path(model_row(state, model_id).path)
    return path if path.exists() else state.settings.models_dir / model_id


@router.get("/{model_id}/report", response_model=ReportOut)
def read_report(model_id: str, state: StateDep) -> dict[str, Any]:
    """The training report (markdown) and the URLs of its plots."""
    path = _model_path(state, model_id)
    report = path / "report.md"
    if not report.is_file():
        raise ServiceError(ErrorCode.NOT_FOUND, f"model {model_id} has no report.md")
    files = sorted(p.name for p in path.iterdir() if p.is_file() and REPORT_FILE.match(p.name))
    return {
        "model_id": model_id,
        "markdown": report.read_text(encoding="utf-8"),
        "files": {name: f"/models/{model_id}/files/{name}" for name in files},
    }


@router.get("/{model_id}/files/{name}", response_class=FileResponse)
def read_model_file(model_id: str, name: str, state: StateDep) -> FileResponse:
    """One file of a model directory: its plots, report.md or model.json (never the encoder)."""
    path = _model_path(state, model_id) / name
    if not REPORT_FILE.match(name) or not path.is_file():
        raise ServiceError(ErrorCode.NOT_FOUND, f"model {model_id} has no file {name!r}")
    return FileResponse(path)
