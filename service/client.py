"""Typed HTTP client for the embedding service: ``Client`` (sync) and ``AsyncClient``, over httpx.

    with Client("http://127.0.0.1:8000", api_key="...") as client:
        client.add_items(x, labels=y)                 # x: (n, dim) array, or a list of items
        client.classify(x_new[:3], k=5).predictions

An *item* may be a numpy array or a list of numbers (a vector), ``bytes`` or a ``Path`` (a PNG or
JPEG file, sent base64-encoded), or a dict in the API's own shape; where a route compares or searches,
``{"id": "..."}`` names an indexed item. Embeddings come back as float32 numpy arrays. Every non-2xx
answer raises ``ApiError`` (a subclass per common status), carrying the server's ``detail``.

Training runs as jobs on the service's worker:

    ds = client.upload_dataset("arrows.npz")             # optional: or a built-in name such as "digits"
    job = client.wait_job(client.train({"dataset": ds.id, "epochs": 5}).id)
    if job.status == "succeeded":
        print(client.model_report(job.model_id).markdown)

This module imports only httpx, numpy, pydantic and the service's response schemas (which import
nothing heavier), so users need neither torch nor FastAPI. Each route is described once, as a ``_Call``
(request + parser), and both clients send it: the two classes differ only in ``await``. New routes
follow the same pattern, or use ``_request`` directly for anything unusual.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Generic, Literal, TypeVar
from urllib.parse import quote

import httpx
import numpy as np
from pydantic import BaseModel, ConfigDict, TypeAdapter
from pydantic_core import to_jsonable_python

from service.schemas import (
    ActivationOut,
    ClassifyResponse,
    DatasetOut,
    ItemOut,
    JobCreated,
    JobList,
    JobOut,
    ModelOut,
    ReportOut,
    SearchResponse,
    SimilarityResponse,
    VerifyResponse,
)
from trainer.config import TrainConfig

__all__ = [
    "ActivationFailedError",
    "ActivationOut",
    "ApiError",
    "AsyncClient",
    "AuthenticationError",
    "ClassifyResponse",
    "Client",
    "ConflictError",
    "DatasetOut",
    "Embeddings",
    "Info",
    "Item",
    "ItemPage",
    "JobCreated",
    "JobList",
    "JobOut",
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
    "VerifyResponse",
]

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 30.0
T = TypeVar("T")

ItemLike = (
    np.ndarray | Sequence[float] | bytes | bytearray | memoryview | os.PathLike[str] | Mapping[str, Any]
)
Items = Sequence[ItemLike] | np.ndarray
Upload = str | os.PathLike[str] | tuple[str, bytes | BinaryIO]  # a file, or (file name, its content)
JobStatus = Literal["queued", "running", "cancelling", "succeeded", "failed", "cancelled"]
JOB_OVER = frozenset({"succeeded", "failed", "cancelled"})  # a job in one of these never changes again


# -- errors ------------------------------------------------------------------------------------------
class ApiError(Exception):
    """A non-2xx answer: ``status_code`` and the server's ``detail`` (a message, or FastAPI's error list)."""

    def __init__(
        self,
        status_code: int,
        detail: Any,
        *,
        method: str = "",
        url: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status_code = status_code
        self.detail = detail
        self.method = method
        self.url = url
        self.headers: Mapping[str, str] = headers or {}
        where = " ".join(part for part in (str(status_code), method, url) if part)
        super().__init__(f"{where}: {_detail_text(detail)}")


class AuthenticationError(ApiError):
    """401: the API key is missing or wrong."""


class NotFoundError(ApiError):
    """404: no item, model, job or data set with that id (or a model without a report)."""


class ConflictError(ApiError):
    """409: the id exists (pass ``upsert=True``), the index is empty, no threshold, activation refused,
    a model or pending job has the training run's name, or the job is over and cannot be cancelled."""


class PayloadTooLargeError(ApiError):
    """413: too many items or too large a body; split the request."""


class UnprocessableError(ApiError):
    """422: an item the model cannot take, a parameter out of range, or a training config or data set
    the service refuses."""


class OverloadedError(ApiError):
    """429: the encoder queue is full; ``retry_after`` seconds is the server's hint."""

    @property
    def retry_after(self) -> float | None:
        value = self.headers.get("retry-after")
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None


class UnavailableError(ApiError):
    """503: no active model (the detail says how to get one)."""


class ActivationFailedError(RuntimeError):
    """``wait_active``: the model's activation failed (every request succeeded); ``reason`` says why."""

    def __init__(self, model_id: str, reason: str) -> None:
        self.model_id = model_id
        self.reason = reason
        super().__init__(f"activation of model {model_id} failed: {reason}")


_ERRORS: dict[int, type[ApiError]] = {
    401: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: UnprocessableError,
    429: OverloadedError,
    503: UnavailableError,
}


def _detail_text(detail: Any) -> str:
    if isinstance(detail, list):  # FastAPI's validation errors: [{"loc": [...], "msg": ...}, ...]
        parts = []
        for err in detail:
            if isinstance(err, Mapping):
                loc = ".".join(str(p) for p in err.get("loc", ()))
                parts.append(f"{loc}: {err.get('msg', err)}" if loc else str(err.get("msg", err)))
            else:
                parts.append(str(err))
        return "; ".join(parts)
    return str(detail)


def _raise_for_status(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        body = response.json()
        detail = body["detail"] if isinstance(body, dict) and "detail" in body else body
    except ValueError:
        detail = response.text
    cls = _ERRORS.get(response.status_code, ApiError)
    raise cls(
        response.status_code,
        detail,
        method=response.request.method,
        url=response.request.url.path,
        headers=dict(response.headers),
    )


# -- results -----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Embeddings:
    """``POST /embed``: one float32 row per item, in request order."""

    model: str
    dim: int
    embeddings: np.ndarray


@dataclass(frozen=True, slots=True)
class Item:
    """A stored item; ``input`` (vector or image bytes) and ``embedding`` only when asked for."""

    id: str
    label: str | None
    metadata: dict[str, Any] | None
    model: str
    created_at: datetime
    input: np.ndarray | bytes | None = None
    embedding: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class ItemPage:
    """``GET /items``: one page and the total count (under the label filter)."""

    items: list[Item]
    total: int
    limit: int
    offset: int


class Ready(BaseModel):
    """``GET /ready``: the active model and the size of its index."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())
    status: str
    model: str
    index_size: int


class Info(BaseModel):
    """``GET /info``: versions, the active model card, the index and the server's limits."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())
    version: str
    versions: dict[str, str] = {}
    model: dict[str, Any] | None = None
    index: dict[str, Any] = {}
    limits: dict[str, Any] = {}


_MODELS = TypeAdapter(list[ModelOut])
_DATASETS = TypeAdapter(list[DatasetOut])


def _item(data: Mapping[str, Any]) -> Item:
    out = ItemOut.model_validate(data)
    raw: np.ndarray | bytes | None = None
    if out.input is not None:
        if "image" in out.input:
            raw = base64.b64decode(out.input["image"])
        elif "vector" in out.input:
            raw = np.asarray(out.input["vector"], dtype=np.float32)
    emb = None if out.embedding is None else np.asarray(out.embedding, dtype=np.float32)
    return Item(out.id, out.label, out.metadata, out.model, out.created_at, raw, emb)


def _embeddings(response: httpx.Response) -> Embeddings:
    data = response.json()
    dim = int(data["dim"])
    emb = np.asarray(data["embeddings"], dtype=np.float32).reshape(-1, dim)
    return Embeddings(data["model"], dim, emb)


def _item_page(response: httpx.Response) -> ItemPage:
    data = response.json()
    return ItemPage([_item(d) for d in data["items"]], data["total"], data["limit"], data["offset"])


def _model(cls: type[BaseModel]) -> Callable[[httpx.Response], Any]:
    return lambda response: cls.model_validate_json(response.content)


# -- request bodies ----------------------------------------------------------------------------------
def _vector(value: Any) -> list[float]:
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"a vector must hold numbers, got dtype {arr.dtype}")
    return arr.ravel().tolist()  # an image-shaped array (C, H, W) goes as its row-major flattening


def _image(value: bytes | bytearray | memoryview | os.PathLike[str]) -> str:
    data = Path(value).read_bytes() if isinstance(value, os.PathLike) else bytes(value)
    return base64.b64encode(data).decode("ascii")


def encode_item(item: ItemLike) -> Any:
    """The JSON form of one item: ``{"vector": [...]}``, ``{"image": "<base64>"}`` or a dict passed on."""
    if isinstance(item, bytes | bytearray | memoryview | os.PathLike):
        return {"image": _image(item)}
    if isinstance(item, Mapping):
        out = dict(item)
        if out.get("vector") is not None:
            out["vector"] = _vector(out["vector"])
        if isinstance(out.get("image"), bytes | bytearray | memoryview | os.PathLike):
            out["image"] = _image(out["image"])
        return out
    if isinstance(item, np.ndarray | Sequence) and not isinstance(item, str):
        return {"vector": _vector(item)}
    raise TypeError(
        f"cannot send {type(item).__name__} as an item: pass a numpy array or list of numbers, "
        "image bytes or a Path, or a dict such as {'id': ...}"
    )


def encode_items(items: Items) -> list[Any]:
    """A batch: a sequence of items, or an array with one item per row (``(n, dim)`` or ``(n, C, H, W)``)."""
    if isinstance(items, np.ndarray):
        if items.ndim < 2:
            raise TypeError(
                "pass a batch as an array with one row per item (2-D or more), or a list of items"
            )
        return [_vector(row) for row in items]
    if isinstance(items, str | bytes | Mapping):
        raise TypeError("pass a list of items, not a single item")
    return [encode_item(item) for item in items]


def _new_items(
    items: Items,
    ids: Sequence[Any] | None,
    labels: Sequence[Any] | None,
    metadata: Sequence[Mapping[str, Any] | None] | None,
) -> list[Any]:
    encoded = encode_items(items)
    for name, values in (("ids", ids), ("labels", labels), ("metadata", metadata)):
        if values is not None and len(values) != len(encoded):
            raise ValueError(f"{len(values)} {name} for {len(encoded)} items")
    out = []
    for i, item in enumerate(encoded):
        entry = dict(item) if isinstance(item, dict) else {"vector": item}  # a bare vector from an array
        if ids is not None and ids[i] is not None:  # None: the service picks an id
            entry["id"] = str(ids[i])
        if labels is not None and labels[i] is not None:
            entry["label"] = str(labels[i])  # labels are strings to the service; numpy ints become "3"
        if metadata is not None and metadata[i] is not None:
            entry["metadata"] = dict(metadata[i] or {})
        out.append(entry)
    return out


def _dumps(body: Any) -> bytes:
    try:
        return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
    except ValueError as exc:
        raise ValueError(f"the request cannot be sent as JSON (NaN or Infinity in an item?): {exc}") from None


def _drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    """Leave optional fields out, so the server's defaults apply."""
    return {k: v for k, v in values.items() if v is not None}


def _path_id(value: str) -> str:
    return quote(value, safe="")


def _train_body(config: Mapping[str, Any] | TrainConfig, activate: bool) -> dict[str, Any]:
    """A ``TrainConfig`` sends only the fields it was given, so the server's defaults fill the rest."""
    if isinstance(config, TrainConfig):
        body = config.model_dump(mode="json", exclude_unset=True)
    else:
        body = to_jsonable_python(dict(config))  # nested models (ItemsSource), paths: plain JSON
    if activate:
        body["activate"] = True  # else the config's own "activate" (if any) stands
    return body


@contextmanager
def _open_upload(file: Upload) -> Iterator[tuple[str, bytes | BinaryIO]]:
    """``(file name, content)`` for a multipart part: a path is opened (streamed, then closed)."""
    if isinstance(file, tuple):
        yield file
        return
    path = Path(file)
    with path.open("rb") as content:
        yield path.name, content


# -- routes, described once --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Call(Generic[T]):
    """One request and how to read its answer; both clients send the same ``_Call`` objects."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    body: Any = None
    params: Mapping[str, Any] | None = None
    files: Mapping[str, Any] | None = None  # multipart parts (an upload); then ``data`` holds its form fields
    data: Mapping[str, str] | None = None


def _none(response: httpx.Response) -> None:
    return None


def _json(response: httpx.Response) -> Any:
    return response.json()


class _Calls:
    """Builders for every route of the current API (a new route: add it here, then to both clients)."""

    @staticmethod
    def embed(items: Items) -> _Call[Embeddings]:
        return _Call("POST", "/embed", _embeddings, {"items": encode_items(items)})

    @staticmethod
    def add_items(
        items: Items,
        ids: Sequence[str] | None,
        labels: Sequence[str | None] | None,
        metadata: Sequence[Mapping[str, Any] | None] | None,
        upsert: bool,
    ) -> _Call[list[str]]:
        body = {"items": _new_items(items, ids, labels, metadata)}
        params = {"upsert": "true"} if upsert else None
        return _Call("POST", "/items", lambda r: list(r.json()["ids"]), body, params)

    @staticmethod
    def get_item(item_id: str, include_input: bool, include_embedding: bool) -> _Call[Item]:
        params = {
            name: "true"
            for name, on in (("include_input", include_input), ("include_embedding", include_embedding))
            if on
        }
        return _Call("GET", f"/items/{_path_id(item_id)}", lambda r: _item(r.json()), params=params)

    @staticmethod
    def delete_item(item_id: str) -> _Call[None]:
        return _Call("DELETE", f"/items/{_path_id(item_id)}", _none)

    @staticmethod
    def list_items(label: str | None, limit: int, offset: int) -> _Call[ItemPage]:
        params = _drop_none({"label": label, "limit": limit, "offset": offset})
        return _Call("GET", "/items", _item_page, params=params)

    @staticmethod
    def search(item: ItemLike, k: int, label: str | None) -> _Call[SearchResponse]:
        body = _drop_none({"item": encode_item(item), "k": k, "label": label})
        return _Call("POST", "/search", _model(SearchResponse), body)

    @staticmethod
    def similarity(a: ItemLike, b: ItemLike) -> _Call[SimilarityResponse]:
        body = {"a": encode_item(a), "b": encode_item(b)}
        return _Call("POST", "/similarity", _model(SimilarityResponse), body)

    @staticmethod
    def verify(a: ItemLike, b: ItemLike, threshold: float | None) -> _Call[VerifyResponse]:
        body = _drop_none({"a": encode_item(a), "b": encode_item(b), "threshold": threshold})
        return _Call("POST", "/verify", _model(VerifyResponse), body)

    @staticmethod
    def classify(items: Items, k: int, weighting: str, threshold: float | None) -> _Call[ClassifyResponse]:
        body = _drop_none(
            {"items": encode_items(items), "k": k, "weighting": weighting, "threshold": threshold}
        )
        return _Call("POST", "/classify", _model(ClassifyResponse), body)

    @staticmethod
    def models() -> _Call[list[ModelOut]]:
        return _Call("GET", "/models", lambda r: _MODELS.validate_json(r.content))

    @staticmethod
    def model(model_id: str) -> _Call[ModelOut]:
        return _Call("GET", f"/models/{_path_id(model_id)}", _model(ModelOut))

    @staticmethod
    def activate_model(model_id: str) -> _Call[ActivationOut]:
        return _Call("POST", f"/models/{_path_id(model_id)}/activate", _model(ActivationOut))

    @staticmethod
    def model_report(model_id: str) -> _Call[ReportOut]:
        return _Call("GET", f"/models/{_path_id(model_id)}/report", _model(ReportOut))

    @staticmethod
    def train(config: Mapping[str, Any] | TrainConfig, activate: bool) -> _Call[JobCreated]:
        return _Call("POST", "/train", _model(JobCreated), _train_body(config, activate))

    @staticmethod
    def jobs(status: JobStatus | None, limit: int, offset: int) -> _Call[JobList]:
        params = _drop_none({"status": status, "limit": limit, "offset": offset})
        return _Call("GET", "/jobs", _model(JobList), params=params)

    @staticmethod
    def job(job_id: str) -> _Call[JobOut]:
        return _Call("GET", f"/jobs/{_path_id(job_id)}", _model(JobOut))

    @staticmethod
    def cancel_job(job_id: str) -> _Call[JobOut]:
        return _Call("POST", f"/jobs/{_path_id(job_id)}/cancel", _model(JobOut))

    @staticmethod
    def upload_dataset(upload: tuple[str, bytes | BinaryIO], label_column: str | None) -> _Call[DatasetOut]:
        form = _drop_none({"label_column": label_column})
        return _Call("POST", "/datasets", _model(DatasetOut), files={"file": upload}, data=form)

    @staticmethod
    def datasets() -> _Call[list[DatasetOut]]:
        return _Call("GET", "/datasets", lambda r: _DATASETS.validate_json(r.content))

    @staticmethod
    def dataset(dataset_id: str) -> _Call[DatasetOut]:
        return _Call("GET", f"/datasets/{_path_id(dataset_id)}", _model(DatasetOut))

    @staticmethod
    def health() -> _Call[dict[str, Any]]:
        return _Call("GET", "/health", _json)

    @staticmethod
    def ready() -> _Call[Ready]:
        return _Call("GET", "/ready", _model(Ready))

    @staticmethod
    def info() -> _Call[Info]:
        return _Call("GET", "/info", _model(Info))

    @staticmethod
    def metrics() -> _Call[str]:
        return _Call("GET", "/metrics", lambda r: r.text)


def _job_over(job: JobOut) -> bool:
    return job.status in JOB_OVER


def _still(job: JobOut) -> str:
    return f"job {job.id} still {job.status}"


def _not_active(model: ModelOut) -> str:
    return f"model {model.id} not active"


def _activation_over(model: ModelOut) -> bool:
    """True once ``model`` is active with no activation of it still running; raises if it failed."""
    activation = model.activation or {}
    status = activation.get("status")
    if status in ("failed", "refused"):
        raise ActivationFailedError(model.id, f"{status}: {activation.get('error') or 'no reason given'}")
    return model.active and status != "activating"


def _poll(
    fetch: Callable[[], T],
    over: Callable[[T], bool],
    timeout: float,
    interval: float,
    what: Callable[[T], str],
) -> T:
    """Call ``fetch`` every ``interval`` seconds until ``over`` holds; TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not over(value := fetch()):
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what(value)} after {timeout}s")
        time.sleep(interval)
    return value


async def _apoll(
    fetch: Callable[[], Awaitable[T]],
    over: Callable[[T], bool],
    timeout: float,
    interval: float,
    what: Callable[[T], str],
) -> T:
    """``_poll`` for the async client."""
    deadline = time.monotonic() + timeout
    while not over(value := await fetch()):
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what(value)} after {timeout}s")
        await asyncio.sleep(interval)
    return value


def _headers(api_key: str | None, headers: Mapping[str, str] | None) -> dict[str, str]:
    out = {"accept": "application/json", **(headers or {})}
    if api_key is not None:
        out["authorization"] = f"Bearer {api_key}"
    return out


def _request_args(json_body: Any, params: Mapping[str, Any] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    args: dict[str, Any] = {"params": params, **kwargs}
    if json_body is not None:
        args["content"] = _dumps(json_body)
        args["headers"] = {"content-type": "application/json", **(kwargs.get("headers") or {})}
    return args


Weighting = Literal["uniform", "distance"]


# -- sync --------------------------------------------------------------------------------------------
class Client:
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

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send one request (``json`` serialised strictly, no NaN); raise ``ApiError`` unless 2xx."""
        response = self._http.request(method, path, **_request_args(json, params, kwargs))
        _raise_for_status(response)
        return response

    def _send(self, call: _Call[T]) -> T:
        response = self._request(
            call.method, call.path, json=call.body, params=call.params, files=call.files, data=call.data
        )
        return call.parse(response)

    def embed(self, items: Items) -> Embeddings:
        """Embed items with the active model; nothing is stored."""
        return self._send(_Calls.embed(items))

    def add_items(
        self,
        items: Items,
        *,
        ids: Sequence[str] | None = None,
        labels: Sequence[str | None] | None = None,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        upsert: bool = False,
    ) -> list[str]:
        """Store and index items (all or nothing); returns their ids. Existing ids: 409 unless ``upsert``."""
        return self._send(_Calls.add_items(items, ids, labels, metadata, upsert))

    def get_item(self, item_id: str, *, include_input: bool = False, include_embedding: bool = False) -> Item:
        """One stored item."""
        return self._send(_Calls.get_item(item_id, include_input, include_embedding))

    def delete_item(self, item_id: str) -> None:
        """Delete an item and its vector."""
        self._send(_Calls.delete_item(item_id))

    def list_items(self, *, label: str | None = None, limit: int = 100, offset: int = 0) -> ItemPage:
        """One page of stored items, oldest first."""
        return self._send(_Calls.list_items(label, limit, offset))

    def iter_items(self, *, label: str | None = None, page_size: int = 1000) -> Iterator[Item]:
        """Every stored item (optionally with one label), page by page."""
        offset = 0
        while True:
            page = self.list_items(label=label, limit=page_size, offset=offset)
            yield from page.items
            offset += len(page.items)
            if not page.items or offset >= page.total:
                return

    def search(self, item: ItemLike, *, k: int = 10, label: str | None = None) -> SearchResponse:
        """The k nearest indexed items to an item (or to ``{"id": ...}``)."""
        return self._send(_Calls.search(item, k, label))

    def similarity(self, a: ItemLike, b: ItemLike) -> SimilarityResponse:
        """Distance and similarity of two items."""
        return self._send(_Calls.similarity(a, b))

    def verify(self, a: ItemLike, b: ItemLike, *, threshold: float | None = None) -> VerifyResponse:
        """Whether two items are the same (distance <= threshold; default the card's)."""
        return self._send(_Calls.verify(a, b, threshold))

    def classify(
        self, items: Items, *, k: int = 5, weighting: Weighting = "uniform", threshold: float | None = None
    ) -> ClassifyResponse:
        """Label items by a vote of their k nearest labelled items."""
        return self._send(_Calls.classify(items, k, weighting, threshold))

    def models(self) -> list[ModelOut]:
        """Registered models, newest first."""
        return self._send(_Calls.models())

    def model(self, model_id: str) -> ModelOut:
        """One registered model, with its activation progress."""
        return self._send(_Calls.model(model_id))

    def activate_model(self, model_id: str) -> ActivationOut:
        """Start activating a model (``status`` 'activating' while it re-embeds, 'active' when done)."""
        return self._send(_Calls.activate_model(model_id))

    def wait_active(self, model_id: str, timeout: float = 120.0, interval: float = 0.1) -> ModelOut:
        """Poll ``/models/{id}`` until the model is active and its activation has finished.

        ``active`` turns true a moment before the activation ends (it still writes the index snapshot),
        and another activation started in between is a 409; so this also waits for ``activation``.
        A failed activation raises ``ActivationFailedError`` (its ``reason``), a slow one TimeoutError.
        """
        return _poll(lambda: self.model(model_id), _activation_over, timeout, interval, _not_active)

    def model_report(self, model_id: str) -> ReportOut:
        """A trained model's report (markdown) and the URLs of its plots; 404 for a model without one."""
        return self._send(_Calls.model_report(model_id))

    def train(self, config: Mapping[str, Any] | TrainConfig, *, activate: bool = False) -> JobCreated:
        """Queue a training job (the trainer's config: a dict or ``TrainConfig``); the whole config is
        checked now (422/409), the job runs on the service's worker. Follow it with ``wait_job``."""
        return self._send(_Calls.train(config, activate))

    def jobs(self, *, status: JobStatus | None = None, limit: int = 100, offset: int = 0) -> JobList:
        """One page of training jobs, newest first (optionally of one status)."""
        return self._send(_Calls.jobs(status, limit, offset))

    def job(self, job_id: str) -> JobOut:
        """One job: status, progress, per-epoch metrics, log tail, error, resulting model."""
        return self._send(_Calls.job(job_id))

    def cancel_job(self, job_id: str) -> JobOut:
        """Cancel a queued job at once, or ask a running one to stop; a finished one is a 409."""
        return self._send(_Calls.cancel_job(job_id))

    def wait_job(self, job_id: str, timeout: float = 3600.0, interval: float = 1.0) -> JobOut:
        """Poll ``/jobs/{id}`` until the job is over (succeeded, failed or cancelled), or TimeoutError.

        A failed or cancelled job is returned, not raised: check ``status`` and ``error``. With
        ``activate``, the activation follows the job: ``wait_active(job.model_id)`` waits for it too.
        """
        return _poll(lambda: self.job(job_id), _job_over, timeout, interval, _still)

    def upload_dataset(self, file: Upload, *, label_column: str | None = None) -> DatasetOut:
        """Upload a .npz (x, y[, label_names]) or .csv data set, checked as the trainer would load it;
        train on it with ``train({"dataset": out.id})``. ``label_column`` names a .csv's labels (the
        service keeps the validated .npz, so ``train`` needs no ``label_column``)."""
        with _open_upload(file) as upload:
            return self._send(_Calls.upload_dataset(upload, label_column))

    def datasets(self) -> list[DatasetOut]:
        """Uploaded data sets, newest first."""
        return self._send(_Calls.datasets())

    def dataset(self, dataset_id: str) -> DatasetOut:
        """One uploaded data set."""
        return self._send(_Calls.dataset(dataset_id))

    def health(self) -> dict[str, Any]:
        """Liveness (needs no API key)."""
        return self._send(_Calls.health())

    def ready(self) -> Ready:
        """Readiness; ``UnavailableError`` (503) without a model."""
        return self._send(_Calls.ready())

    def wait_ready(self, timeout: float = 60.0, interval: float = 0.2) -> Ready:
        """Poll ``/ready`` until it answers 200 (connection errors and 503 are retried), or TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.ready()
            except (httpx.TransportError, UnavailableError):
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"service not ready after {timeout}s") from None
            time.sleep(interval)

    def info(self) -> Info:
        """Versions, the active model's card, the index and the server's limits."""
        return self._send(_Calls.info())

    def metrics(self) -> str:
        """Prometheus metrics, as text."""
        return self._send(_Calls.metrics())


# -- async -------------------------------------------------------------------------------------------
class AsyncClient:
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

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send one request (``json`` serialised strictly, no NaN); raise ``ApiError`` unless 2xx."""
        response = await self._http.request(method, path, **_request_args(json, params, kwargs))
        _raise_for_status(response)
        return response

    async def _send(self, call: _Call[T]) -> T:
        response = await self._request(
            call.method, call.path, json=call.body, params=call.params, files=call.files, data=call.data
        )
        return call.parse(response)

    async def embed(self, items: Items) -> Embeddings:
        """Embed items with the active model; nothing is stored."""
        return await self._send(_Calls.embed(items))

    async def add_items(
        self,
        items: Items,
        *,
        ids: Sequence[str] | None = None,
        labels: Sequence[str | None] | None = None,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        upsert: bool = False,
    ) -> list[str]:
        """Store and index items (all or nothing); returns their ids. Existing ids: 409 unless ``upsert``."""
        return await self._send(_Calls.add_items(items, ids, labels, metadata, upsert))

    async def get_item(
        self, item_id: str, *, include_input: bool = False, include_embedding: bool = False
    ) -> Item:
        """One stored item."""
        return await self._send(_Calls.get_item(item_id, include_input, include_embedding))

    async def delete_item(self, item_id: str) -> None:
        """Delete an item and its vector."""
        await self._send(_Calls.delete_item(item_id))

    async def list_items(self, *, label: str | None = None, limit: int = 100, offset: int = 0) -> ItemPage:
        """One page of stored items, oldest first."""
        return await self._send(_Calls.list_items(label, limit, offset))

    async def search(self, item: ItemLike, *, k: int = 10, label: str | None = None) -> SearchResponse:
        """The k nearest indexed items to an item (or to ``{"id": ...}``)."""
        return await self._send(_Calls.search(item, k, label))

    async def similarity(self, a: ItemLike, b: ItemLike) -> SimilarityResponse:
        """Distance and similarity of two items."""
        return await self._send(_Calls.similarity(a, b))

    async def verify(self, a: ItemLike, b: ItemLike, *, threshold: float | None = None) -> VerifyResponse:
        """Whether two items are the same (distance <= threshold; default the card's)."""
        return await self._send(_Calls.verify(a, b, threshold))

    async def classify(
        self, items: Items, *, k: int = 5, weighting: Weighting = "uniform", threshold: float | None = None
    ) -> ClassifyResponse:
        """Label items by a vote of their k nearest labelled items."""
        return await self._send(_Calls.classify(items, k, weighting, threshold))

    async def models(self) -> list[ModelOut]:
        """Registered models, newest first."""
        return await self._send(_Calls.models())

    async def model(self, model_id: str) -> ModelOut:
        """One registered model, with its activation progress."""
        return await self._send(_Calls.model(model_id))

    async def activate_model(self, model_id: str) -> ActivationOut:
        """Start activating a model (``status`` 'activating' while it re-embeds, 'active' when done)."""
        return await self._send(_Calls.activate_model(model_id))

    async def wait_active(self, model_id: str, timeout: float = 120.0, interval: float = 0.1) -> ModelOut:
        """Poll ``/models/{id}`` until the model is active and its activation is over (see ``Client``)."""
        return await _apoll(lambda: self.model(model_id), _activation_over, timeout, interval, _not_active)

    async def model_report(self, model_id: str) -> ReportOut:
        """A trained model's report (markdown) and the URLs of its plots; 404 for a model without one."""
        return await self._send(_Calls.model_report(model_id))

    async def train(self, config: Mapping[str, Any] | TrainConfig, *, activate: bool = False) -> JobCreated:
        """Queue a training job (checked now, run by the service's worker); see ``Client.train``."""
        return await self._send(_Calls.train(config, activate))

    async def jobs(self, *, status: JobStatus | None = None, limit: int = 100, offset: int = 0) -> JobList:
        """One page of training jobs, newest first (optionally of one status)."""
        return await self._send(_Calls.jobs(status, limit, offset))

    async def job(self, job_id: str) -> JobOut:
        """One job: status, progress, per-epoch metrics, log tail, error, resulting model."""
        return await self._send(_Calls.job(job_id))

    async def cancel_job(self, job_id: str) -> JobOut:
        """Cancel a queued job at once, or ask a running one to stop; a finished one is a 409."""
        return await self._send(_Calls.cancel_job(job_id))

    async def wait_job(self, job_id: str, timeout: float = 3600.0, interval: float = 1.0) -> JobOut:
        """Poll ``/jobs/{id}`` until the job is over, or TimeoutError; a failed job is returned."""
        return await _apoll(lambda: self.job(job_id), _job_over, timeout, interval, _still)

    async def upload_dataset(self, file: Upload, *, label_column: str | None = None) -> DatasetOut:
        """Upload a .npz or .csv data set for ``train``; see ``Client.upload_dataset``."""
        with _open_upload(file) as upload:
            return await self._send(_Calls.upload_dataset(upload, label_column))

    async def datasets(self) -> list[DatasetOut]:
        """Uploaded data sets, newest first."""
        return await self._send(_Calls.datasets())

    async def dataset(self, dataset_id: str) -> DatasetOut:
        """One uploaded data set."""
        return await self._send(_Calls.dataset(dataset_id))

    async def health(self) -> dict[str, Any]:
        """Liveness (needs no API key)."""
        return await self._send(_Calls.health())

    async def ready(self) -> Ready:
        """Readiness; ``UnavailableError`` (503) without a model."""
        return await self._send(_Calls.ready())

    async def wait_ready(self, timeout: float = 60.0, interval: float = 0.2) -> Ready:
        """Poll ``/ready`` until it answers 200 (connection errors and 503 are retried), or TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return await self.ready()
            except (httpx.TransportError, UnavailableError):
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"service not ready after {timeout}s") from None
            await asyncio.sleep(interval)

    async def info(self) -> Info:
        """Versions, the active model's card, the index and the server's limits."""
        return await self._send(_Calls.info())

    async def metrics(self) -> str:
        """Prometheus metrics, as text."""
        return await self._send(_Calls.metrics())
