"""POST /verify: are two items the same identity/class, by the card's calibrated threshold?"""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import OrjsonRoute, StateDep
from service.api.search import pair
from service.errors import ErrorCode, ServiceError
from service.responses import OrjsonResponse
from service.schemas import VerifyRequest, VerifyResponse
from service.state import retry_on_model_change

router = APIRouter(tags=["verify"], route_class=OrjsonRoute)


@router.post("/verify", response_model=VerifyResponse)
async def verify_pair(body: VerifyRequest, state: StateDep) -> OrjsonResponse:
    """Same when distance <= threshold (default: the card's calibrated ``threshold.distance``)."""
    card = state.require_runtime().encoder.card
    threshold = body.threshold
    if threshold is None:
        if card.threshold is None:
            raise ServiceError(
                ErrorCode.CONFLICT,
                f"model {card.model_id} has no calibrated threshold; pass 'threshold' (a distance)",
            )
        threshold = card.threshold.distance
    _, d, s = await retry_on_model_change(lambda: pair(state, body))
    return OrjsonResponse({"same": d <= threshold, "distance": d, "similarity": s, "threshold": threshold})
