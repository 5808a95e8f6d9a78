"""Collections: create, list, show, delete; activate a model, roll back, read the history.

The item routes of a collection (``/collections/{name}/items``, ``/search``...) are the flat routes'
own routers mounted under this prefix (see ``service.app``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from service.api import docs
from service.api.deps import CollectionDep, OrjsonRoute, ServiceDep
from service.catalogue import Catalogue
from service.errors import ErrorCode, ServiceError
from service.schemas import (
    ActivateRequest,
    ActivationAccepted,
    CollectionCreate,
    CollectionOut,
    HistoryEntry,
)
from service.state import Service
from service.tables import CollectionRow

router = APIRouter(prefix="/collections", tags=["collections"], route_class=OrjsonRoute)
NAMED = (docs.UNKNOWN_COLLECTION, docs.BAD_COLLECTION_NAME)  # every route with {name} in its path
EXISTS = docs.Problem(409, "the name is taken", "collection 'digits' already exists")
NO_EARLIER_MODEL = docs.Problem(
    409, "no earlier model to roll back to", "collection 'digits' has no earlier model to roll back to"
)
DEFAULT_STAYS = docs.Problem(
    409,
    "default cannot be deleted",
    "the default collection cannot be deleted; empty it with DELETE /collections/default/items",
)
ALREADY_ACTIVE = {
    "model": ActivationAccepted,
    "description": "The model was already active: nothing to do",
}


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


@router.post(
    "",
    response_model=CollectionOut,
    status_code=201,
    summary="Create a collection",
    responses=docs.errors(
        *docs.JSON_BODY,
        docs.BAD_COLLECTION_NAME,
        docs.UNKNOWN_MODEL,
        EXISTS,
        docs.UNLOADABLE_MODEL,
    ),
)
def create_collection(body: CollectionCreate, service: ServiceDep, response: Response) -> dict[str, Any]:
    """A new collection, empty; with ``model`` (a registered model id) it takes items at once."""
    if body.model is not None:
        service.models.row(body.model)  # 404 before anything is created
    catalogue = service.collections.create(body.name)
    if body.model is not None:
        service.activations.activate_now(catalogue, body.model, "request")
    response.headers["Location"] = f"/collections/{body.name}"
    return collection_view(service, catalogue)


@router.get("", response_model=list[CollectionOut], summary="List collections", responses=docs.errors())
def read_collections(service: ServiceDep) -> list[dict[str, Any]]:
    """Every collection with its size and active model."""
    views = []
    for catalogue in service.collections.all():
        try:
            views.append(collection_view(service, catalogue))
        except ServiceError:  # deleted through another replica while we listed
            continue
    return views


@router.get(
    "/{name}", response_model=CollectionOut, summary="Read a collection", responses=docs.errors(*NAMED)
)
def read_collection(catalogue: CollectionDep, service: ServiceDep) -> dict[str, Any]:
    """One collection, with its latest activation."""
    return collection_view(service, catalogue)


@router.delete(
    "/{name}",
    status_code=204,
    summary="Delete a collection",
    responses=docs.errors(*NAMED, DEFAULT_STAYS, docs.ACTIVATING),
)
def delete_collection(catalogue: CollectionDep, service: ServiceDep) -> Response:
    """Delete a collection with its items, index and snapshots (``default`` can only be emptied)."""
    service.collections.delete(catalogue.name)
    return Response(status_code=204)


@router.post(
    "/{name}/activate",
    response_model=ActivationAccepted,
    status_code=202,
    summary="Activate a model in a collection",
    responses={
        200: ALREADY_ACTIVE,
        **docs.errors(
            *docs.JSON_BODY,
            *NAMED,
            docs.UNKNOWN_MODEL,
            docs.GATE_REFUSED,
            docs.ACTIVATING,
            docs.UNREADABLE_ITEMS,
            docs.UNLOADABLE_MODEL,
        ),
    },
)
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


@router.post(
    "/{name}/rollback",
    response_model=ActivationAccepted,
    summary="Roll back to the previous model",
    responses=docs.errors(*NAMED, NO_EARLIER_MODEL, docs.ACTIVATING, docs.UNLOADABLE_MODEL),
)
async def rollback_model(catalogue: CollectionDep, service: ServiceDep) -> dict[str, Any]:
    """Back to the model active before the last activation, at once (its index and embeddings were kept)."""
    return await run_in_threadpool(service.activations.rollback, catalogue, "request")


@router.get(
    "/{name}/history",
    response_model=list[HistoryEntry],
    summary="Read the activation history",
    responses=docs.errors(*NAMED),
)
def read_history(catalogue: CollectionDep, service: ServiceDep) -> list[dict[str, Any]]:
    """Activations and rollbacks, newest first: model, when, by whom, outcome, the gate's numbers."""
    return service.activations.history(catalogue.name)
