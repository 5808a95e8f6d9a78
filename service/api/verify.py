"""POST /verify: are two items the same identity/class, by the card's calibrated threshold?"""

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from service import retrieval
from service.api import docs
from service.api.deps import OrjsonRoute, ServiceDep
from service.catalogue import Catalogue
from service.responses import OrjsonResponse
from service.schemas import VerifyRequest, VerifyResponse
from service.state import retry_on_model_change


def routes(catalogue_dep: Callable[..., Any]) -> APIRouter:
    router = APIRouter(tags=["verify"], route_class=OrjsonRoute)
    CatalogueDep = Annotated[Catalogue, Depends(catalogue_dep)]  # noqa: N806 - a type alias
    doc = docs.ItemRouteDocs(catalogue_dep)

    @router.post(
        "/verify",
        response_model=VerifyResponse,
        summary=doc.summary("Verify a pair"),
        responses=doc.errors(
            *docs.JSON_BODY,
            docs.BAD_ITEM,
            docs.UNKNOWN_ITEM,
            docs.NO_THRESHOLD,
            docs.MODEL_CHANGING,
            docs.OVERLOADED,
            needs_model=True,
        ),
    )
    async def verify_pair(
        body: VerifyRequest, service: ServiceDep, catalogue: CatalogueDep
    ) -> OrjsonResponse:
        """Same when distance <= threshold (default: the card's calibrated ``threshold.distance``)."""

        async def attempt() -> dict[str, Any]:
            runtime = catalogue.require_runtime()
            threshold = retrieval.default_threshold(runtime, body.threshold, required=True)
            emb = await retrieval.query_embeddings(service, catalogue, runtime, [body.a, body.b])
            d, s = retrieval.pair(runtime, emb)
            return {"same": d <= threshold, "distance": d, "similarity": s, "threshold": threshold}

        return OrjsonResponse(await retry_on_model_change(attempt))

    return router
