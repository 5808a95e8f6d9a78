"""Liveness, readiness, service info and Prometheus metrics."""

from __future__ import annotations

import platform
from importlib.metadata import version
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service import __version__
from service.api import docs
from service.api.deps import ServiceDep
from service.datasets import UNPACKED_FACTOR
from service.errors import no_model
from service.schemas import INPUT_LIMITS, HealthOut, ReadyOut

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthOut, summary="Liveness", responses=docs.errors(public=True))
def read_health() -> dict[str, str]:
    """Liveness: the process answers (also without a model)."""
    return {"status": "ok"}


@router.get(
    "/ready", response_model=ReadyOut, summary="Readiness", responses=docs.errors(docs.NO_MODEL, public=True)
)
def read_ready(service: ServiceDep) -> dict[str, Any]:
    """Readiness: the default collection has a model and its index is loaded (503 otherwise)."""
    runtime = service.collections.default.runtime
    if runtime is None:
        raise no_model()
    return {"status": "ready", "model": runtime.model_id, "index_size": runtime.index.size}


@router.get("/info", summary="Versions, models, collections and limits", responses=docs.errors())
def read_info(service: ServiceDep) -> dict[str, Any]:
    """Versions, the default collection's card and index, every collection, and the limits enforced."""
    s = service.settings
    collections = {}
    for catalogue in service.collections.all():
        runtime = catalogue.runtime
        collections[catalogue.name] = {
            "model": runtime.model_id if runtime else None,
            "size": runtime.index.size if runtime else 0,
            "index_type": runtime.index.kind if runtime else None,
            "recall_at_10": runtime.index.recall if runtime else None,
        }
    default = service.collections.default.runtime
    return {
        "version": __version__,
        "versions": {
            "python": platform.python_version(),
            **{pkg: version(pkg) for pkg in ("torch", "faiss-cpu", "fastapi", "numpy", "pydantic")},
        },
        "model": default.encoder.card.model_dump(mode="json") if default else None,
        "index": {
            "size": default.index.size if default else 0,
            "type": default.index.kind if default else None,
            "configured_type": s.index_type,
            "model_id": default.model_id if default else None,
            **(default.index.describe() if default else {}),
        },
        "collections": collections,
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
        "gate": {"tolerance": s.gate_tolerance, "sample": s.gate_sample},
    }


@router.get(
    "/metrics", response_class=PlainTextResponse, summary="Prometheus metrics", responses=docs.errors()
)
def read_metrics(service: ServiceDep) -> Response:
    """Prometheus metrics of this app."""
    return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)
