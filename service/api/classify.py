"""POST /classify: k-NN vote among indexed, labelled items (semantics in ``trainer.knn``)."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from service.api.deps import OrjsonRoute, StateDep, check_count, check_k, release_body
from service.api.search import nearest
from service.repository import rows_by_key
from service.responses import OrjsonResponse
from service.schemas import ClassifyRequest, ClassifyResponse, raw_input
from service.state import Runtime, ServiceState, retry_on_model_change
from trainer.knn import Weighting, vote

router = APIRouter(tags=["classify"], route_class=OrjsonRoute)


def _classify(
    state: ServiceState,
    runtime: Runtime,
    emb: np.ndarray,
    k: int,
    weighting: Weighting,
    threshold: float | None,
) -> dict[str, Any]:
    dist, keys = nearest(state, runtime, emb, k)
    rows = rows_by_key(state, keys, with_metadata=False)
    predictions = []
    for row_keys, row_dist in zip(keys.tolist(), dist.tolist(), strict=True):
        neighbors = [
            {"id": rows[key][0], "label": rows[key][1], "distance": d}
            for key, d in zip(row_keys, row_dist, strict=True)
            if key in rows
        ]
        result = vote(
            [n["label"] for n in neighbors], [n["distance"] for n in neighbors], weighting, threshold
        )
        predictions.append(
            {
                "label": result.label,
                "confidence": result.confidence,
                "votes": result.votes,
                "neighbors": neighbors,
                "unknown": result.unknown,
            }
        )
    return {"model": runtime.model_id, "predictions": predictions}


@router.post("/classify", response_model=ClassifyResponse)
async def classify_items(body: ClassifyRequest, state: StateDep, request: Request) -> OrjsonResponse:
    """Label each item by a vote of its k nearest labelled items (unknown if none is near enough)."""
    check_count(state, len(body.items))
    check_k(state, body.k)
    raws = [raw_input(item) for item in body.items]
    k, weighting, asked_threshold = body.k, body.weighting, body.threshold
    release_body(request)

    async def attempt() -> dict[str, Any]:
        runtime = state.require_runtime()
        threshold = asked_threshold
        if threshold is None and runtime.encoder.card.threshold is not None:
            threshold = runtime.encoder.card.threshold.distance  # no card threshold: every neighbour votes
        emb = await state.embed(runtime, raws)
        return await run_in_threadpool(_classify, state, runtime, emb, k, weighting, threshold)

    return OrjsonResponse(await retry_on_model_change(attempt))
