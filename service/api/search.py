"""POST /search and POST /similarity."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from service.api.deps import OrjsonRoute, StateDep, check_k, resolve_items
from service.errors import ErrorCode, ServiceError
from service.index import pair_distance, similarity
from service.repository import keys_with_label, rows_by_key
from service.responses import OrjsonResponse
from service.schemas import PairRequest, SearchRequest, SearchResponse, SimilarityResponse
from service.state import Runtime, ServiceState, retry_on_model_change

router = APIRouter(tags=["search"], route_class=OrjsonRoute)

EMPTY_INDEX = "the index is empty: add items with POST /items first"


def nearest(
    state: ServiceState, runtime: Runtime, queries: np.ndarray, k: int, only: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """k nearest (distances, keys) under the read lock; 409 on an empty index."""
    with state.lock.read():
        state.check_current(runtime)
        if runtime.index.size == 0:
            raise ServiceError(ErrorCode.EMPTY_INDEX, EMPTY_INDEX)
        return runtime.index.search(queries, k, only)


def _search(
    state: ServiceState, runtime: Runtime, query: np.ndarray, k: int, label: str | None
) -> dict[str, Any]:
    only = keys_with_label(state, label) if label is not None else None
    if only is not None and not len(only):
        return {"model": runtime.model_id, "neighbors": []}  # no item has this label
    dist, keys = nearest(state, runtime, query, k, only)
    rows = rows_by_key(state, keys, with_metadata=True)
    sims = similarity(runtime.encoder.card.distance, dist[0])
    neighbors = [
        {"id": rows[key][0], "label": rows[key][1], "distance": d, "similarity": s, "metadata": rows[key][2]}
        for key, d, s in zip(keys[0].tolist(), dist[0].tolist(), sims.tolist(), strict=True)
        if key in rows  # -1 pads missing results; a row deleted meanwhile is skipped
    ]
    return {"model": runtime.model_id, "neighbors": neighbors}


@router.post("/search", response_model=SearchResponse)
async def search_items(body: SearchRequest, state: StateDep) -> OrjsonResponse:
    """The k items nearest to an item (or to an indexed item, by id), optionally with one label."""
    check_k(state, body.k)

    async def attempt() -> dict[str, Any]:
        runtime = state.require_runtime()
        query = await resolve_items(state, runtime, [body.item])
        return await run_in_threadpool(_search, state, runtime, query, body.k, body.label)

    return OrjsonResponse(await retry_on_model_change(attempt))


async def pair(state: ServiceState, body: PairRequest) -> tuple[Runtime, float, float]:
    """(runtime, distance, similarity) of the two items of a pair request."""
    runtime = state.require_runtime()
    emb = await resolve_items(state, runtime, [body.a, body.b])
    kind = runtime.encoder.card.distance
    d = pair_distance(kind, emb[0], emb[1])
    return runtime, d, float(similarity(kind, np.float64(d)))


@router.post("/similarity", response_model=SimilarityResponse)
async def compare_items(body: PairRequest, state: StateDep) -> OrjsonResponse:
    """Distance and similarity of two items (cosine: 1 - cos and cos; euclidean: L2 and 1/(1+L2))."""
    _, d, s = await retry_on_model_change(lambda: pair(state, body))
    return OrjsonResponse({"distance": d, "similarity": s})
