"""POST /embed (and /collections/{name}/embed): embeddings of items, nothing stored."""

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from service.api import docs
from service.api.deps import OrjsonRoute, ServiceDep, check_count, release_body
from service.catalogue import Catalogue
from service.responses import OrjsonResponse
from service.schemas import EmbedRequest, EmbedResponse, raw_input


def routes(catalogue_dep: Callable[..., Any]) -> APIRouter:
    router = APIRouter(tags=["embed"], route_class=OrjsonRoute)
    CatalogueDep = Annotated[Catalogue, Depends(catalogue_dep)]  # noqa: N806 - a type alias
    doc = docs.ItemRouteDocs(catalogue_dep)

    @router.post(
        "/embed",
        response_model=EmbedResponse,
        summary=doc.summary("Embed items"),
        responses=doc.errors(
            *docs.JSON_BODY,
            docs.TOO_MANY_ITEMS,
            docs.BAD_ITEM,
            docs.BAD_ITEM_SHAPE,
            docs.OVERLOADED,
            needs_model=True,
        ),
    )
    async def create_embeddings(
        body: EmbedRequest, service: ServiceDep, catalogue: CatalogueDep, request: Request
    ) -> OrjsonResponse:
        """Embed items with the collection's active model (nothing is stored)."""
        check_count(service, len(body.items))
        runtime = catalogue.require_runtime()
        raws = [raw_input(item) for item in body.items]
        release_body(request)
        emb = await service.embed(runtime, raws)
        return OrjsonResponse({"model": runtime.model_id, "dim": int(emb.shape[1]), "embeddings": emb})

    return router
