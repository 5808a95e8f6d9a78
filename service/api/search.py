"""POST /search and POST /similarity (and under /collections/{name})."""

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from service import retrieval
from service.api import docs
from service.api.deps import OrjsonRoute, ServiceDep, check_k
from service.catalogue import Catalogue
from service.responses import OrjsonResponse
from service.schemas import PairRequest, SearchRequest, SearchResponse, SimilarityResponse
from service.state import retry_on_model_change


def routes(catalogue_dep: Callable[..., Any]) -> APIRouter:
    router = APIRouter(tags=["search"], route_class=OrjsonRoute)
    CatalogueDep = Annotated[Catalogue, Depends(catalogue_dep)]  # noqa: N806 - a type alias
    doc = docs.ItemRouteDocs(catalogue_dep)

    @router.post(
        "/search",
        response_model=SearchResponse,
        summary=doc.summary("Search the nearest items"),
        responses=doc.errors(
            *docs.JSON_BODY,
            docs.BAD_ITEM,
            docs.BAD_ITEM_SHAPE,
            docs.BAD_K,
            docs.UNKNOWN_ITEM,
            docs.EMPTY,
            docs.MODEL_CHANGING,
            docs.OVERLOADED,
            needs_model=True,
        ),
    )
    async def search_items(
        body: SearchRequest, service: ServiceDep, catalogue: CatalogueDep
    ) -> OrjsonResponse:
        """The k items nearest to an item (or to an indexed item, by id), optionally with one label."""
        check_k(service, body.k)

        async def attempt() -> dict[str, Any]:
            runtime = catalogue.require_runtime()
            query = await retrieval.query_embeddings(service, catalogue, runtime, [body.item])
            return await run_in_threadpool(retrieval.search, catalogue, runtime, query, body.k, body.label)

        return OrjsonResponse(await retry_on_model_change(attempt))

    @router.post(
        "/similarity",
        response_model=SimilarityResponse,
        summary=doc.summary("Compare two items"),
        responses=doc.errors(
            *docs.JSON_BODY,
            docs.BAD_ITEM,
            docs.UNKNOWN_ITEM,
            docs.MODEL_CHANGING,
            docs.OVERLOADED,
            needs_model=True,
        ),
    )
    async def compare_items(
        body: PairRequest, service: ServiceDep, catalogue: CatalogueDep
    ) -> OrjsonResponse:
        """Distance and similarity of two items (cosine: 1 - cos and cos; euclidean: L2 and 1/(1+L2))."""

        async def attempt() -> tuple[float, float]:
            runtime = catalogue.require_runtime()
            emb = await retrieval.query_embeddings(service, catalogue, runtime, [body.a, body.b])
            return retrieval.pair(runtime, emb)

        d, s = await retry_on_model_change(attempt)
        return OrjsonResponse({"distance": d, "similarity": s})

    return router
