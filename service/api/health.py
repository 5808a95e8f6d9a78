"""Liveness, readiness, service info and Prometheus metrics."""

from __future__ import annotations

import platform
from importlib.metadata import version
from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import service
from service.api.datasets import UNPACKED_FACTOR
from service.api.deps import StateDep
from service.errors import no_model
from service.schemas import INPUT_LIMITS

router = APIRouter(tags=["health"])


@router.get("/health")
def read_health() -> dict[str, str]:
    """Liveness: the process answers (also without a model)."""
    return {"status": "ok"}


@router.get("/ready")
def read_ready(state: StateDep) -> dict[str, Any]:
    """Readiness: a model and its index are loaded (503 otherwise, saying how to get a model)."""
    runtime = state.runtime
    if runtime is None:
        raise no_model()
    return {"status": "ready", "model": runtime.model_id, "index_size": runtime.index.size}


@router.get("/info")
def read_info(state: StateDep) -> dict[str, Any]:
    """Versions, the active model's card, the index and the limits this server enforces."""
    s = state.settings
    runtime = state.runtime
    return {
        "version": service.__version__,
        "versions": {
            "python": platform.python_version(),
            **{pkg: version(pkg) for pkg in ("torch", "faiss-cpu", "fastapi", "numpy", "pydantic")},
        },
        "model": runtime.encoder.card.model_dump(mode="json") if runtime else None,
        "index": {
            "size": runtime.index.size if runtime else 0,
            "type": runtime.index.kind if runtime else None,
            "configured_type": s.index_type,
            "model_id": runtime.model_id if runtime else None,
        },
        "limits": {
            "max_items": s.max_items,
            "max_body_bytes": s.max_body_bytes,
            "max_k": s.max_k,
            "max_batch_size": s.max_batch_size,
            "max_wait_ms": s.max_wait_ms,
            "max_queue": s.max_queue,
            "max_upload_bytes": s.max_upload_bytes,
            "max_npz_unpacked_bytes": UNPACKED_FACTOR * s.max_upload_bytes,  # a .csv: max_upload_bytes
            **INPUT_LIMITS,  # ids, labels and metadata: fixed, see service.schemas
        },
    }


@router.get("/metrics")
def read_metrics(state: StateDep) -> Response:
    """Prometheus metrics of this app."""
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
