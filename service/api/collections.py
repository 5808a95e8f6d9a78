"""Collections: create, list, show, delete; activate a model, roll back, read the history.

The item routes of a collection (``/collections/{name}/items``, ``/search``...) are the flat routes'
own routers mounted under this prefix (see ``service.app``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from service.api.deps import CollectionDep, OrjsonRoute, ServiceDep
from service.catalogue import Catalogue
from service.errors import ErrorCode, ServiceError
from service.schemas import ActivateRequest, ActivationAccepted, CollectionCreate, CollectionOut, HistoryEntry
from service.state import Service
from service.tables import CollectionRow

router = APIRouter(prefix="/collections", tags=["collections"], route_class=OrjsonRoute)


def collection_view(service: Service, catalogue: Catalogue) -> dict[str, Any]:
    with service.db.session() as session:
        row = session.get(CollectionRow, catalogue.name)
    if row is None:  # deleted through another replica, not yet followed here
        raise ServiceError(ErrorCode.NOT_FOUND, f"no collection named {catalogue.name!r} (GET /collections)")
    runtime = catalogue.runtime
    return {
        "name": catalogue.name,
        "model": catalogue.model_id,
        "previous_model": row.previous_model_id,
        "size": runtime.index.size if runtime else catalogue.count(),
        "index": {
            **(runtime.index.describe() if runtime else {"type": None}),
            "configured_type": service.settings.index_type,
        },
        "activation": service.activations.latest(collection=catalogue.name),
        "created_at": row.created_at,
        "activated_at": row.activated_at,
    }


@router.post("", response_model=CollectionOut, status_code=201)
def create_collection(body: CollectionCreate, service: ServiceDep, response: Response) -> dict[str, Any]:
    """A new collection, empty; with ``model`` (a registered model id) it takes items at once."""
    if body.model is not None:
        service.models.row(body.model)  # 404 before anything is created
    catalogue = service.collections.create(body.name)
    if body.model is not None:
        service.activations.activate_now(catalogue, body.model, "request")
    response.headers["Location"] = f"/collections/{body.name}"
    return collection_view(service, catalogue)


@router.get("", response_model=list[CollectionOut])
def read_collections(service: ServiceDep) -> list[dict[str, Any]]:
    """Every collection with its size and active model."""
    views = []
    for catalogue in service.collections.all():
        try:
            views.append(collection_view(service, catalogue))
        except ServiceError:  # deleted through another replica while we listed
            continue
    return views


@router.get("/{name}", response_model=CollectionOut)
def read_collection(catalogue: CollectionDep, service: ServiceDep) -> dict[str, Any]:
    """One collection, with its latest activation."""
    return collection_view(service, catalogue)


@router.delete("/{name}", status_code=204)
def delete_collection(catalogue: CollectionDep, service: ServiceDep) -> Response:
    """Delete a collection with its items, index and snapshots (``default`` can only be emptied)."""
    service.collections.delete(catalogue.name)
    return Response(status_code=204)


@router.post("/{name}/activate", response_model=ActivationAccepted, status_code=202)
async def activate_model(
    body: ActivateRequest, catalogue: CollectionDep, service: ServiceDep, response: Response
) -> dict[str, Any]:
    """Gate, re-embed the collection's items with the model in the background, then swap (202);
    409 with both models' numbers when the gate finds it worse, unless ``force``."""
    outcome = await run_in_threadpool(
        service.activations.start, catalogue, body.model, force=body.force, requested_by="request"
    )
    if outcome["status"] == "active":
        response.status_code = 200
    response.headers["Location"] = f"/collections/{catalogue.name}"
    return outcome


@router.post("/{name}/rollback", response_model=ActivationAccepted)
async def rollback_model(catalogue: CollectionDep, service: ServiceDep) -> dict[str, Any]:
    """Back to the model active before the last activation, at once (its index and embeddings were kept)."""
    return await run_in_threadpool(service.activations.rollback, catalogue, "request")


@router.get("/{name}/history", response_model=list[HistoryEntry])
def read_history(catalogue: CollectionDep, service: ServiceDep) -> list[dict[str, Any]]:
    """Activations and rollbacks, newest first: model, when, by whom, outcome, the gate's numbers."""
    return service.activations.history(catalogue.name)
