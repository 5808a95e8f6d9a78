"""Items: store (embedded and indexed), read, list, delete."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from service import repository
from service.api.deps import ItemDep, OrjsonRoute, SessionDep, StateDep, check_count, release_body
from service.errors import ErrorCode, ServiceError
from service.repository import NewRow, insert_items, item_out, list_items
from service.responses import OrjsonResponse
from service.schemas import (
    DECIMAL_DIGITS,
    CreateItemsRequest,
    CreateItemsResponse,
    ItemList,
    ItemOut,
    NewItem,
)
from service.state import retry_on_model_change

router = APIRouter(prefix="/items", tags=["items"], route_class=OrjsonRoute)


@router.post("", status_code=201, response_model=CreateItemsResponse)
async def create_items(
    body: CreateItemsRequest, state: StateDep, request: Request, upsert: bool = False
) -> OrjsonResponse:
    """Embed, store and index items; all or nothing. Existing ids are a 409 unless ``upsert=true``."""
    check_count(state, len(body.items))
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
        runtime = state.require_runtime()
        embeddings = await state.embed(runtime, [r.raw for r in rows])
        return await run_in_threadpool(insert_items, state, runtime, rows, embeddings, upsert)

    return OrjsonResponse({"ids": await retry_on_model_change(attempt)}, status_code=201)


@router.get("", response_model=ItemList)
def read_items(
    session: SessionDep,
    label: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000), DECIMAL_DIGITS] = 100,
    offset: Annotated[int, Query(ge=0, le=2**53), DECIMAL_DIGITS] = 0,
) -> dict[str, object]:
    """List items (optionally with one label), oldest first, with the total count."""
    rows, total = list_items(session, label, limit, offset)
    return {"items": [item_out(r) for r in rows], "total": total, "limit": limit, "offset": offset}


@router.get("/{item_id}", response_model=ItemOut)
def read_item(
    item: ItemDep, include_input: bool = False, include_embedding: bool = False
) -> dict[str, object]:
    """One item; its raw input and embedding only when asked."""
    return item_out(item, include_input, include_embedding)


@router.delete("/{item_id}", status_code=204)
def delete_item(item_id: str, state: StateDep) -> Response:
    """Delete an item and its vector."""
    repository.delete_item(state, item_id)
    return Response(status_code=204)
