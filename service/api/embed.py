"""POST /embed."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service.api.deps import OrjsonRoute, StateDep, check_count, release_body
from service.responses import OrjsonResponse
from service.schemas import EmbedRequest, EmbedResponse, raw_input

router = APIRouter(tags=["embed"], route_class=OrjsonRoute)


@router.post("/embed", response_model=EmbedResponse)
async def create_embeddings(body: EmbedRequest, state: StateDep, request: Request) -> OrjsonResponse:
    """Embed items with the active model (nothing is stored)."""
    check_count(state, len(body.items))
    runtime = state.require_runtime()
    raws = [raw_input(item) for item in body.items]
    release_body(request)
    emb = await state.embed(runtime, raws)
    return OrjsonResponse({"model": runtime.model_id, "dim": int(emb.shape[1]), "embeddings": emb})
