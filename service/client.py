"""Typed HTTP client for the embedding service: ``Client`` (sync) and ``AsyncClient``, over httpx.

    with Client("http://127.0.0.1:8000", api_key="...") as client:
        client.add_items(x, labels=y)                 # x: (n, dim) array, or a list of items
        client.classify(x_new[:3], k=5).predictions
        digits = client.collection("digits")          # the same item routes, inside one collection
        digits.search(x[0], k=3)

An *item* may be a numpy array or a list of numbers (a vector), ``bytes`` or a ``Path`` (a PNG or
JPEG file, sent base64-encoded), or a dict in the API's own shape; where a route compares or searches,
``{"id": "..."}`` names an indexed item. Embeddings come back as float32 numpy arrays. Every non-2xx
answer raises ``ApiError`` (a subclass per common status), carrying the server's ``detail``.

Training runs as jobs on the service's worker:

    ds = client.upload_dataset("arrows.npz")             # optional: or a built-in name such as "digits"
    job = client.wait_job(client.train({"dataset": ds.id, "epochs": 5}).id)
    if job.status == "succeeded":
        print(client.model_report(job.model_id).markdown)

This module and its ``client_*`` modules import only httpx, pydantic, numpy and ``trainer.config`` (pure
pydantic), so users need neither torch, FAISS, FastAPI nor SQLAlchemy
(``tests/service/test_client_imports.py`` checks it in an environment holding nothing else).

Each route is written once, below, as a flow (see ``service.client_flow``): its signature, docstring,
request and parsing. ``Client`` and ``AsyncClient`` (and a collection's ``Collection`` and
``AsyncCollection``) are the same routes bound to a sync or an async driver. A new route: add one flow
to the routes class it belongs to, and both clients have it.
"""

from __future__ import annotations

import io
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import httpx
import numpy as np

from service.client_encode import (
    ItemLike,
    Items,
    Upload,
    drop_none,
    encode_item,
    encode_items,
    flags,
    new_items,
    open_upload,
    path_id,
    train_body,
)
from service.client_errors import (
    ActivationFailedError,
    ApiError,
    AuthenticationError,
    ConflictError,
    NotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    UnavailableError,
    UnprocessableError,
)
from service.client_flow import (
    AsyncSender,
    Emit,
    Flow,
    Request,
    Sleep,
    Stream,
    SyncSender,
    iterator_route,
    poll,
    route,
)
from service.client_models import (
    ActivationAccepted,
    ActivationOut,
    ClassifyResponse,
    CollectionOut,
    DatasetOut,
    Embeddings,
    HistoryEntry,
    Info,
    Item,
    ItemPage,
    JobCreated,
    JobList,
    JobOut,
    JobStatus,
    ModelOut,
    Ready,
    ReportOut,
    SearchResponse,
    SimilarityResponse,
    VerifyResponse,
    embeddings,
    item,
    item_page,
    parse,
    parse_list,
)
from trainer.config import TrainConfig

__all__ = [
    "ActivationAccepted",
    "ActivationFailedError",
    "ActivationOut",
    "ApiError",
    "AsyncClient",
    "AsyncCollection",
    "AuthenticationError",
    "ClassifyResponse",
    "Client",
    "Collection",
    "CollectionOut",
    "ConflictError",
    "DatasetOut",
    "Embeddings",
    "HistoryEntry",
    "Info",
    "Item",
    "ItemLike",
    "ItemPage",
    "Items",
    "JobCreated",
    "JobList",
    "JobOut",
    "JobStatus",
    "ModelOut",
    "NotFoundError",
    "OverloadedError",
    "PayloadTooLargeError",
    "Ready",
    "ReportOut",
    "SearchResponse",
    "SimilarityResponse",
    "TrainConfig",
    "UnavailableError",
    "UnprocessableError",
    "Upload",
    "VerifyResponse",
    "encode_item",
    "encode_items",
]

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 30.0
JOB_OVER = frozenset({"succeeded", "failed", "cancelled"})  # a job in one of these never changes again
Weighting = Literal["uniform", "distance"]


# -- the routes of one collection's items --------------------------------------------------------------
class ItemRoutes:
    """Embed, store, search and classify items of one collection: ``/collections/{name}/...`` for a
    ``Collection``; for ``Client`` the flat routes, which mean the collection ``default``."""

    _prefix: str

    def _at(self, path: str) -> str:
        return self._prefix + path

    @route
    def embed(self, items: Items) -> Flow[Embeddings]:
        """Embed items with the collection's model; nothing is stored."""
        response = yield Request("POST", self._at("/embed"), {"items": encode_items(items)})
        return embeddings(response)

    @route
    def add_items(
        self,
        items: Items,
        *,
        ids: Sequence[str | None] | None = None,
        labels: Sequence[str | None] | None = None,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        upsert: bool = False,
    ) -> Flow[list[str]]:
        """Store and index items (all or nothing); returns their ids. Existing ids: 409 unless ``upsert``."""
        body = {"items": new_items(items, ids, labels, metadata)}
        response = yield Request("POST", self._at("/items"), body, flags(upsert=upsert))
        return list(response.json()["ids"])

    @route
    def get_item(
        self, item_id: str, *, include_input: bool = False, include_embedding: bool = False
    ) -> Flow[Item]:
        """One stored item."""
        params = flags(include_input=include_input, include_embedding=include_embedding)
        response = yield Request("GET", self._at(f"/items/{path_id(item_id)}"), params=params)
        return item(response.json())

    @route
    def delete_item(self, item_id: str) -> Flow[None]:
        """Delete an item and its vector."""
        yield Request("DELETE", self._at(f"/items/{path_id(item_id)}"))

    @route
    def list_items(self, *, label: str | None = None, limit: int = 100, offset: int = 0) -> Flow[ItemPage]:
        """One page of stored items, oldest first."""
        params = drop_none({"label": label, "limit": limit, "offset": offset})
        response = yield Request("GET", self._at("/items"), params=params)
        return item_page(response)

    @iterator_route
    def iter_items(self, *, label: str | None = None, page_size: int = 1000) -> Stream[Item]:
        """Every stored item (optionally with one label), page by page."""
        offset = 0
        while True:
            page = yield from ItemRoutes.list_items(self, label=label, limit=page_size, offset=offset)
            for one in page.items:
                yield Emit(one)
            offset += len(page.items)
            if not page.items or offset >= page.total:
                return

    @route
    def import_items(
        self,
        vectors: Any,
        *,
        ids: Sequence[str] | None = None,
        labels: Sequence[str] | None = None,
        upsert: bool = False,
        chunk: int = 50_000,
    ) -> Flow[int]:
        """Bulk import rows of vectors (a 2-D array) with optional ids and labels, ``chunk`` rows per
        request (each a .npz checked whole, then stored); returns how many were imported."""
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        imported = 0
        for start in range(0, len(x), chunk):
            arrays: dict[str, Any] = {"x": x[start : start + chunk]}
            if ids is not None:
                arrays["ids"] = np.asarray(ids[start : start + chunk], dtype=str)
            if labels is not None:
                arrays["labels"] = np.asarray(labels[start : start + chunk], dtype=str)
            buffer = io.BytesIO()
            np.savez(buffer, **arrays)
            request = Request(
                "POST", self._at("/items/import"), params=flags(upsert=upsert), content=buffer.getvalue()
            )
            imported += int((yield request).json()["imported"])
        return imported

    @route
    def clear(self) -> Flow[int]:
        """Delete every item of the collection (its model stays); returns how many there were."""
        response = yield Request("DELETE", self._at("/items"), params={"all": "true"})
        return int(response.json()["deleted"])

    @route
    def search(self, item: ItemLike, *, k: int = 10, label: str | None = None) -> Flow[SearchResponse]:
        """The k nearest indexed items to an item (or to ``{"id": ...}``)."""
        body = drop_none({"item": encode_item(item), "k": k, "label": label})
        return parse(SearchResponse, (yield Request("POST", self._at("/search"), body)))

    @route
    def similarity(self, a: ItemLike, b: ItemLike) -> Flow[SimilarityResponse]:
        """Distance and similarity of two items."""
        body = {"a": encode_item(a), "b": encode_item(b)}
        return parse(SimilarityResponse, (yield Request("POST", self._at("/similarity"), body)))

    @route
    def verify(self, a: ItemLike, b: ItemLike, *, threshold: float | None = None) -> Flow[VerifyResponse]:
        """Whether two items are the same (distance <= threshold; default the card's)."""
        body = drop_none({"a": encode_item(a), "b": encode_item(b), "threshold": threshold})
        return parse(VerifyResponse, (yield Request("POST", self._at("/verify"), body)))

    @route
    def classify(
        self, items: Items, *, k: int = 5, weighting: Weighting = "uniform", threshold: float | None = None
    ) -> Flow[ClassifyResponse]:
        """Label items by a vote of their k nearest labelled items."""
        body = {"items": encode_items(items), "k": k, "weighting": weighting, "threshold": threshold}
        return parse(ClassifyResponse, (yield Request("POST", self._at("/classify"), drop_none(body))))


# -- one collection --------------------------------------------------------------------------------------
class CollectionRoutes(ItemRoutes):
    """The item routes inside one collection, plus its model: activate, wait, roll back, history."""

    name: str

    @route
    def info(self) -> Flow[CollectionOut]:
        """The collection: active model, rollback target, size, index and latest activation."""
        return parse(CollectionOut, (yield Request("GET", self._prefix)))

    @route
    def activate(self, model: str, *, force: bool = False) -> Flow[ActivationAccepted]:
        """Start putting a registered model live here: ``activating`` while it re-embeds the items
        (follow it with ``wait_active``), ``active`` if it already is. A ``ConflictError`` when the
        promotion gate finds it worse than the active model (its ``detail`` names both models' numbers),
        unless ``force``, or when the model cannot read the stored items."""
        body = {"model": model, **({"force": True} if force else {})}
        return parse(ActivationAccepted, (yield Request("POST", self._at("/activate"), body)))

    @route
    def wait_active(self, model: str, timeout: float = 120.0, interval: float = 0.1) -> Flow[CollectionOut]:
        """Poll the collection until ``model`` serves it and its activation is over. If that activation
        failed or was refused (also one a job's ``activate`` started): ``ActivationFailedError``; if it
        takes longer than ``timeout``: TimeoutError."""

        def over(collection: CollectionOut) -> bool:
            latest = collection.activation
            if latest is not None and latest.model == model and latest.status in ("failed", "refused"):
                raise ActivationFailedError(model, f"{latest.status}: {latest.error or 'no reason given'}")
            return collection.model == model and (latest is None or latest.status != "activating")

        return (
            yield from poll(
                lambda: CollectionRoutes.info(self),
                over,
                timeout,
                interval,
                lambda c: f"model {model} not active in collection {c.name!r}",
            )
        )

    @route
    def rollback(self) -> Flow[ActivationAccepted]:
        """Back to the model active before the last activation, at once (its index was kept); a
        ``ConflictError`` when there is none."""
        return parse(ActivationAccepted, (yield Request("POST", self._at("/rollback"))))

    @route
    def history(self) -> Flow[list[HistoryEntry]]:
        """Activations and rollbacks, newest first: model, when, by whom, outcome, the gate's numbers."""
        return parse_list(HistoryEntry, (yield Request("GET", self._at("/history"))))


# -- the whole service -------------------------------------------------------------------------------------
class ServiceRoutes(ItemRoutes):
    """Routes of the whole service: collections, models, training jobs, data sets, health; its own item
    routes mean the collection ``default``."""

    _prefix = ""

    # collections
    @route
    def collections(self) -> Flow[list[CollectionOut]]:
        """Every collection with its size and active model."""
        return parse_list(CollectionOut, (yield Request("GET", "/collections")))

    @route
    def create_collection(self, name: str, model: str | None = None) -> Flow[CollectionOut]:
        """A new, empty collection; with ``model`` (a registered model id) it takes items at once, without
        it they are a ``ConflictError`` until a model is activated. An existing name: ``ConflictError``."""
        body = drop_none({"name": name, "model": model})
        return parse(CollectionOut, (yield Request("POST", "/collections", body)))

    @route
    def delete_collection(self, name: str) -> Flow[None]:
        """Delete a collection with its items, index and history (``default`` can only be emptied)."""
        yield Request("DELETE", f"/collections/{path_id(name)}")

    # models
    @route
    def models(self) -> Flow[list[ModelOut]]:
        """Registered models, newest first."""
        return parse_list(ModelOut, (yield Request("GET", "/models")))

    @route
    def model(self, model_id: str) -> Flow[ModelOut]:
        """One registered model, with the collections it serves and its latest activation."""
        return parse(ModelOut, (yield Request("GET", f"/models/{path_id(model_id)}")))

    @route
    def activate_model(self, model_id: str) -> Flow[ActivationOut]:
        """Start activating a model in ``default`` (``status`` 'activating' while it re-embeds, 'active' when
        done); ``collection(name).activate(model_id)`` for another collection."""
        return parse(ActivationOut, (yield Request("POST", f"/models/{path_id(model_id)}/activate")))

    @route
    def wait_active(self, model_id: str, timeout: float = 120.0, interval: float = 0.1) -> Flow[ModelOut]:
        """Poll ``/models/{id}`` until the model is active in ``default`` and its activation has finished.

        ``active`` turns true a moment before the activation ends (it still writes the index snapshot),
        and another activation started in between is a 409; so this also waits for ``activation``.
        A failed or refused activation raises ``ActivationFailedError`` (its ``reason``), a slow one
        TimeoutError. For another collection: ``collection(name).wait_active(model_id)``.
        """
        return (
            yield from poll(
                lambda: ServiceRoutes.model(self, model_id),
                _activation_over,
                timeout,
                interval,
                lambda m: f"model {m.id} not active",
            )
        )

    @route
    def model_report(self, model_id: str) -> Flow[ReportOut]:
        """A trained model's report (markdown) and the URLs of its plots; 404 for a model without one."""
        return parse(ReportOut, (yield Request("GET", f"/models/{path_id(model_id)}/report")))

    # training
    @route
    def train(
        self,
        config: Mapping[str, Any] | TrainConfig,
        *,
        activate: bool = False,
        collection: str | None = None,
        force: bool = False,
    ) -> Flow[JobCreated]:
        """Queue a training job (the trainer's config: a dict or ``TrainConfig``); the whole config is
        checked now (422/409), the job runs on the service's worker. Follow it with ``wait_job``.

        With ``activate`` the finished model is activated in ``collection`` (default ``default``), past the
        promotion gate with ``force``; a dataset ``{"source": "items", "collection": name}`` trains on
        that collection's labelled items."""
        body = train_body(config, activate, collection, force)
        return parse(JobCreated, (yield Request("POST", "/train", body)))

    @route
    def jobs(self, *, status: JobStatus | None = None, limit: int = 100, offset: int = 0) -> Flow[JobList]:
        """One page of training jobs, newest first (optionally of one status)."""
        params = drop_none({"status": status, "limit": limit, "offset": offset})
        return parse(JobList, (yield Request("GET", "/jobs", params=params)))

    @route
    def job(self, job_id: str) -> Flow[JobOut]:
        """One job: status, progress, per-epoch metrics, log tail, error, resulting model."""
        return parse(JobOut, (yield Request("GET", f"/jobs/{path_id(job_id)}")))

    @route
    def cancel_job(self, job_id: str) -> Flow[JobOut]:
        """Cancel a queued job at once, or ask a running one to stop; a finished one is a 409."""
        return parse(JobOut, (yield Request("POST", f"/jobs/{path_id(job_id)}/cancel")))

    @route
    def wait_job(self, job_id: str, timeout: float = 3600.0, interval: float = 1.0) -> Flow[JobOut]:
        """Poll ``/jobs/{id}`` until the job is over (succeeded, failed or cancelled), or TimeoutError.

        A failed or cancelled job is returned, not raised: check ``status`` and ``error``. With
        ``activate``, the activation follows the job: ``wait_active(job.model_id)`` waits for it too.
        """
        return (
            yield from poll(
                lambda: ServiceRoutes.job(self, job_id),
                lambda job: job.status in JOB_OVER,
                timeout,
                interval,
                lambda job: f"job {job.id} still {job.status}",
            )
        )

    # data sets
    @route
    def upload_dataset(self, file: Upload, *, label_column: str | None = None) -> Flow[DatasetOut]:
        """Upload a .npz (x, y[, label_names]) or .csv data set, checked as the trainer would load it;
        train on it with ``train({"dataset": out.id})``. ``label_column`` names a .csv's labels (the
        service keeps the validated .npz, so ``train`` needs no ``label_column``)."""
        form = drop_none({"label_column": label_column})
        with open_upload(file) as upload:
            response = yield Request("POST", "/datasets", files={"file": upload}, data=form)
        return parse(DatasetOut, response)

    @route
    def datasets(self) -> Flow[list[DatasetOut]]:
        """Uploaded data sets, newest first."""
        return parse_list(DatasetOut, (yield Request("GET", "/datasets")))

    @route
    def dataset(self, dataset_id: str) -> Flow[DatasetOut]:
        """One uploaded data set."""
        return parse(DatasetOut, (yield Request("GET", f"/datasets/{path_id(dataset_id)}")))

    # health
    @route
    def health(self) -> Flow[dict[str, Any]]:
        """Liveness (needs no API key)."""
        response: httpx.Response = yield Request("GET", "/health")
        return dict(response.json())

    @route
    def ready(self) -> Flow[Ready]:
        """Readiness; ``UnavailableError`` (503) while ``default`` has no model."""
        return parse(Ready, (yield Request("GET", "/ready")))

    @route
    def wait_ready(self, timeout: float = 60.0, interval: float = 0.2) -> Flow[Ready]:
        """Poll ``/ready`` until it answers 200 (connection errors and 503 are retried), or TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return (yield from ServiceRoutes.ready(self))
            except (httpx.TransportError, UnavailableError):
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"service not ready after {timeout}s") from None
            yield Sleep(interval)

    @route
    def info(self) -> Flow[Info]:
        """Versions, the default collection's model card and index, every collection, the limits."""
        return parse(Info, (yield Request("GET", "/info")))

    @route
    def metrics(self) -> Flow[str]:
        """Prometheus metrics, as text."""
        response: httpx.Response = yield Request("GET", "/metrics")
        return response.text


def _activation_over(model: ModelOut) -> bool:
    """True once ``model`` is active with no activation of it still running; raises if it failed."""
    activation = model.activation or {}
    status = activation.get("status")
    if status in ("failed", "refused"):
        raise ActivationFailedError(model.id, f"{status}: {activation.get('error') or 'no reason given'}")
    return model.active and status != "activating"


def _headers(api_key: str | None, headers: Mapping[str, str] | None) -> dict[str, str]:
    out = {"accept": "application/json", **(headers or {})}
    if api_key is not None:
        out["authorization"] = f"Bearer {api_key}"
    return out


# -- the clients: the routes above, bound to a driver ---------------------------------------------------
class Collection(CollectionRoutes, SyncSender):
    """One collection of a ``Client`` (``client.collection(name)``); shares its connections."""

    def __init__(self, http: httpx.Client, name: str) -> None:
        self._http = http
        self.name = name
        self._prefix = f"/collections/{path_id(name)}"

    def __repr__(self) -> str:
        return f"Collection({self.name!r})"


class AsyncCollection(CollectionRoutes, AsyncSender):
    """One collection of an ``AsyncClient``: the same methods as ``Collection``, awaited."""

    def __init__(self, http: httpx.AsyncClient, name: str) -> None:
        self._http = http
        self.name = name
        self._prefix = f"/collections/{path_id(name)}"

    def __repr__(self) -> str:
        return f"AsyncCollection({self.name!r})"


class Client(ServiceRoutes, SyncSender):
    """Synchronous client; use as a context manager (or call ``close``) to release the connection pool."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url, timeout=timeout, headers=_headers(api_key, headers), transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def collection(self, name: str) -> Collection:
        """The item routes and the model of one collection (no request is sent until a method is called)."""
        return Collection(self._http, name)


class AsyncClient(ServiceRoutes, AsyncSender):
    """Asynchronous twin of ``Client``: the same methods, awaited; ``async with`` closes the pool."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url, timeout=timeout, headers=_headers(api_key, headers), transport=transport
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def collection(self, name: str) -> AsyncCollection:
        """The item routes and the model of one collection, awaited (``await c.collection(n).search(x)``)."""
        return AsyncCollection(self._http, name)
