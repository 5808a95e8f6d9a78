"""POST /classify: k-NN vote among indexed, labelled items (semantics in ``trainer.knn``)."""

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from service import retrieval
from service.api import docs
from service.api.deps import OrjsonRoute, ServiceDep, check_count, check_k, release_body
from service.catalogue import Catalogue
from service.responses import OrjsonResponse
from service.schemas import ClassifyRequest, ClassifyResponse, raw_input
from service.state import retry_on_model_change


def routes(catalogue_dep: Callable[..., Any]) -> APIRouter:
    router = APIRouter(tags=["classify"], route_class=OrjsonRoute)
    CatalogueDep = Annotated[Catalogue, Depends(catalogue_dep)]  # noqa: N806 - a type alias
    doc = docs.ItemRouteDocs(catalogue_dep)

    @router.post(
        "/classify",
        response_model=ClassifyResponse,
        summary=doc.summary("Classify items"),
        responses=doc.errors(
            *docs.JSON_BODY,
            docs.TOO_MANY_ITEMS,
            docs.BAD_ITEM,
            docs.BAD_ITEM_SHAPE,
            docs.BAD_K,
            docs.EMPTY,
            docs.MODEL_CHANGING,
            docs.OVERLOADED,
            needs_model=True,
        ),
    )
    async def classify_items(
        body: ClassifyRequest, service: ServiceDep, catalogue: CatalogueDep, request: Request
    ) -> OrjsonResponse:
        """Label each item by a vote of its k nearest labelled items (unknown if none is near enough)."""
        check_count(service, len(body.items))
        check_k(service, body.k)
        raws = [raw_input(item) for item in body.items]
        k, weighting, asked = body.k, body.weighting, body.threshold
        release_body(request)

        async def attempt() -> dict[str, Any]:
            runtime = catalogue.require_runtime()
            threshold = retrieval.default_threshold(
                runtime, asked, required=False
            )  # none: all neighbours vote
            emb = await service.embed(runtime, raws)
            return await run_in_threadpool(
                retrieval.classify, catalogue, runtime, emb, k, weighting, threshold
            )

        return OrjsonResponse(await retry_on_model_change(attempt))

    return router
