"""Items of a collection: store (embedded and indexed), read, list, delete."""

import base64
import pathlib
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from service import importer
from service.api import docs
from service.api.deps import OrjsonRoute, ServiceDep, check_count, release_body
from service.catalogue import Catalogue
from service.errors import ErrorCode, ServiceError
from service.items import NewRow, decode_input
from service.responses import OrjsonResponse
from service.schemas import (
    DECIMAL_DIGITS,
    CreateItemsRequest,
    CreateItemsResponse,
    DeletedOut,
    ImportResponse,
    ItemList,
    ItemOut,
    NewItem,
)
from service.state import retry_on_model_change
from service.tables import ItemRow

UpsertQuery = Annotated[
    bool,
    Query(description="replace items whose id exists (else a 409)", openapi_examples=docs.example(True)),
]
ItemIdPath = Annotated[
    str, Path(description="the item's id in the collection", openapi_examples=docs.example("zero-1"))
]


def item_view(
    row: ItemRow,
    model: str | None,
    embedding: np.ndarray | None = None,
    include_input: bool = False,
    include_embedding: bool = False,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": row.id,
        "label": row.label,
        "metadata": row.meta,
        "model": model,
        "created_at": row.created_at,
    }
    if include_input:
        raw = decode_input(row.input_kind, row.input_data)
        out["input"] = (
            {"image": base64.b64encode(raw).decode()} if isinstance(raw, bytes) else {"vector": raw.tolist()}
        )
    if include_embedding:
        out["embedding"] = embedding.tolist() if embedding is not None else None
    return out


def routes(catalogue_dep: Callable[..., Any]) -> APIRouter:
    router = APIRouter(prefix="/items", tags=["items"], route_class=OrjsonRoute)
    CatalogueDep = Annotated[Catalogue, Depends(catalogue_dep)]  # noqa: N806 - a type alias
    doc = docs.ItemRouteDocs(catalogue_dep)

    @router.post(
        "",
        status_code=201,
        response_model=CreateItemsResponse,
        summary=doc.summary("Add items"),
        responses=doc.errors(
            *docs.JSON_BODY,
            docs.TOO_MANY_ITEMS,
            docs.BAD_ITEM,
            docs.BAD_ITEM_SHAPE,
            docs.REPEATED_IDS,
            docs.BAD_FLAG,
            docs.IDS_EXIST,
            docs.MODEL_CHANGING,
            docs.OVERLOADED,
            needs_model=True,
        ),
    )
    async def create_items(
        body: CreateItemsRequest,
        service: ServiceDep,
        catalogue: CatalogueDep,
        request: Request,
        upsert: UpsertQuery = False,
    ) -> OrjsonResponse:
        """Embed, store and index items; all or nothing. Existing ids are a 409 unless ``upsert=true``."""
        check_count(service, len(body.items))
        rows = [
            NewRow(item.id or uuid.uuid4().hex, item.label, item.metadata, item.raw)
            if isinstance(item, NewItem)
            else NewRow(uuid.uuid4().hex, None, None, item)
            for item in body.items
        ]
        release_body(request)
        repeated = [item_id for item_id, n in Counter(r.id for r in rows).items() if n > 1]
        if repeated:
            raise ServiceError(
                ErrorCode.INVALID_INPUT, f"ids repeated within the request: {', '.join(repeated[:5])}"
            )

        async def attempt() -> list[str]:
            runtime = catalogue.require_runtime()
            embeddings = await service.embed(runtime, [r.raw for r in rows])
            return await run_in_threadpool(catalogue.add, runtime, rows, embeddings, upsert)

        return OrjsonResponse({"ids": await retry_on_model_change(attempt)}, status_code=201)

    @router.post(
        "/import",
        status_code=201,
        response_model=ImportResponse,
        summary=doc.summary("Import items in bulk"),
        openapi_extra={
            "requestBody": {
                "required": True,
                "description": "a .npz (numpy.savez) with x (rows of vectors) and optional ids and labels",
                "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            }
        },
        responses=doc.errors(
            docs.BODY_TOO_LARGE, docs.BAD_IMPORT, docs.IDS_EXIST, docs.MODEL_CHANGING, needs_model=True
        ),
    )
    async def import_items(
        service: ServiceDep,
        catalogue: CatalogueDep,
        request: Request,
        upsert: UpsertQuery = False,
    ) -> dict[str, Any]:
        """Bulk import: the body is a .npz of ``x`` (rows of vectors) and optional ``ids`` and ``labels``
        (string arrays); all checked before anything is written, then stored in chunks."""
        with tempfile.NamedTemporaryFile(prefix="import-", suffix=".npz") as spool:
            async for chunk in request.stream():  # the body limit counts what arrives
                spool.write(chunk)
            spool.flush()
            return await run_in_threadpool(
                importer.import_npz, service, catalogue, pathlib.Path(spool.name), upsert
            )

    @router.get(
        "",
        response_model=ItemList,
        summary=doc.summary("List items"),
        responses=doc.errors(docs.BAD_LIMIT),
    )
    def read_items(
        catalogue: CatalogueDep,
        label: Annotated[
            str | None, Query(description="only items with this label", openapi_examples=docs.example("0"))
        ] = None,
        limit: Annotated[
            int,
            Query(ge=1, le=1000, description="page size", openapi_examples=docs.example(100)),
            DECIMAL_DIGITS,
        ] = 100,
        offset: Annotated[
            int,
            Query(ge=0, le=2**53, description="items to skip", openapi_examples=docs.example(0)),
            DECIMAL_DIGITS,
        ] = 0,
    ) -> dict[str, object]:
        """List items (optionally with one label), oldest first, with the total count."""
        rows, total = catalogue.list(label, limit, offset)
        model = catalogue.model_id
        return {
            "items": [item_view(r, model) for r in rows],
            "total": total,
            "limit": limit,
            "offset": offset,
        }

    @router.get(
        "/{item_id}",
        response_model=ItemOut,
        summary=doc.summary("Read an item"),
        responses=doc.errors(docs.UNKNOWN_ITEM, docs.BAD_FLAG),
    )
    def read_item(
        item_id: ItemIdPath,
        catalogue: CatalogueDep,
        include_input: Annotated[
            bool,
            Query(
                description="add the stored input (vector or base64 image)",
                openapi_examples=docs.example(True),
            ),
        ] = False,
        include_embedding: Annotated[
            bool,
            Query(
                description="add the embedding under the active model", openapi_examples=docs.example(True)
            ),
        ] = False,
    ) -> dict[str, object]:
        """One item; its raw input and embedding only when asked."""
        row, embedding = catalogue.get(item_id)
        return item_view(row, catalogue.model_id, embedding, include_input, include_embedding)

    @router.delete(
        "/{item_id}",
        status_code=204,
        summary=doc.summary("Delete an item"),
        responses=doc.errors(docs.UNKNOWN_ITEM, docs.MOVED_ELSEWHERE),
    )
    def delete_item(item_id: ItemIdPath, catalogue: CatalogueDep) -> Response:
        """Delete an item and its vector."""
        catalogue.delete(item_id)
        return Response(status_code=204)

    @router.delete(
        "",
        status_code=200,
        response_model=DeletedOut,
        summary=doc.summary("Delete every item"),
        responses=doc.errors(docs.ALL_REQUIRED, docs.MOVED_ELSEWHERE),
    )
    def delete_items(
        catalogue: CatalogueDep,
        all: Annotated[  # noqa: A002
            bool,
            Query(description="must be true: a guard against accidents", openapi_examples=docs.example(True)),
        ] = False,
    ) -> dict[str, int]:
        """Empty the collection (``?all=true``, so it never happens by accident); its model stays."""
        if not all:
            raise ServiceError(
                ErrorCode.INVALID_REQUEST, "pass all=true to delete every item of the collection"
            )
        return {"deleted": catalogue.clear()}

    return router
