"""The client's typed answers, and how each is read from a response.

The pydantic models mirror the server's response models in ``service/schemas.py`` field for field (a test
compares them), but are declared here: the server's module needs orjson and validates requests, and the
client must import with httpx, pydantic and numpy alone. Fields the server adds later are ignored, so an
older client keeps working against a newer server.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, Literal, TypeVar

import httpx
import numpy as np
from pydantic import BaseModel, ConfigDict, TypeAdapter

M = TypeVar("M", bound=BaseModel)
JobStatus = Literal["queued", "running", "cancelling", "succeeded", "failed", "cancelled"]


# -- results with numpy arrays -----------------------------------------------------------------------
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
    model: str | None  # None: the collection has no model loaded
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


# -- the service -------------------------------------------------------------------------------------
class Ready(BaseModel):
    """``GET /ready``: the default collection's model and the size of its index."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())
    status: str
    model: str
    index_size: int


class Info(BaseModel):
    """``GET /info``: versions, the default collection's model card and index, and the server's limits."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())
    version: str
    versions: dict[str, str] = {}
    model: dict[str, Any] | None = None
    index: dict[str, Any] = {}
    limits: dict[str, Any] = {}


# -- item routes -------------------------------------------------------------------------------------
class ItemOut(BaseModel):
    id: str
    label: str | None
    metadata: dict[str, Any] | None
    model: str | None
    created_at: datetime
    input: dict[str, Any] | None = None
    embedding: list[float] | None = None


class Neighbor(BaseModel):
    id: str
    label: str | None
    distance: float
    similarity: float
    metadata: dict[str, Any] | None = None


class SearchResponse(BaseModel):
    """``search``: the nearest items, nearest first."""

    model: str
    neighbors: list[Neighbor]


class SimilarityResponse(BaseModel):
    distance: float
    similarity: float


class VerifyResponse(SimilarityResponse):
    same: bool
    threshold: float


class ClassifyNeighbor(BaseModel):
    id: str
    label: str | None
    distance: float


class Prediction(BaseModel):
    """One item's label by vote; ``label`` None and ``unknown`` True when nothing known lies near."""

    label: str | None
    confidence: float
    votes: dict[str, float]
    neighbors: list[ClassifyNeighbor]
    unknown: bool


class ClassifyResponse(BaseModel):
    model: str
    predictions: list[Prediction]


# -- models and collections --------------------------------------------------------------------------
class ModelOut(BaseModel):
    """A registered model: its card, the collections it serves, ``active`` in ``default``."""

    id: str
    path: str
    active: bool
    collections: list[str]
    created_at: datetime
    card: dict[str, Any]
    activation: dict[str, Any] | None = None


class ActivationOut(BaseModel):
    id: str
    status: Literal["active", "activating"]


class HistoryEntry(BaseModel):
    """One activation or rollback of a collection: who asked, the outcome, the promotion gate's numbers
    (``gate``: checked, passed, reason, sample, tolerance, current_model, current, candidate)."""

    seq: int
    collection: str
    model: str
    previous_model: str | None
    kind: Literal["activation", "rollback"]
    requested_by: str
    status: Literal["activating", "active", "failed", "refused"]
    gate: dict[str, Any] | None = None
    error: str | None
    done: int
    total: int | None
    started_at: datetime
    finished_at: datetime | None


class CollectionOut(BaseModel):
    """A collection: its active model (None: it takes no items yet), rollback target, size, index."""

    name: str
    model: str | None
    previous_model: str | None
    size: int
    index: dict[str, Any]
    activation: HistoryEntry | None = None
    created_at: datetime
    activated_at: datetime | None


class ActivationAccepted(BaseModel):
    """``activate`` and ``rollback``: ``activating`` (follow it with ``wait_active``) or ``active``."""

    status: Literal["active", "activating"]
    model: str
    activation: int | None = None


# -- training ----------------------------------------------------------------------------------------
class JobCreated(BaseModel):
    id: str
    status: str
    model_id: str


class JobOut(BaseModel):
    """A training job: status, progress, per-epoch metrics, log tail, error and, with ``activate``, the
    activation of its model (``pending``, ``activating``, ``active``, ``failed: ...``, ``refused: ...``)."""

    id: str
    status: JobStatus
    model_id: str
    dataset: str
    test_dataset: str | None = None
    config: dict[str, Any]
    collection: str = "default"
    force: bool = False
    activate: bool
    activation: str | None = None
    progress: dict[str, Any]
    metrics: list[dict[str, Any]]
    result: dict[str, Any] | None = None
    error: str | None
    log: str
    attempts: int
    worker_id: str | None
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None


class JobList(BaseModel):
    jobs: list[JobOut]
    total: int
    limit: int
    offset: int


class DatasetOut(BaseModel):
    id: str
    filename: str
    original_name: str
    n: int
    classes: list[str]
    shape: list[int]
    size_bytes: int
    created_at: datetime


class ReportOut(BaseModel):
    """A trained model's report: markdown, and file name -> URL of each plot and file."""

    model_id: str
    markdown: str
    files: dict[str, str]


# -- reading answers ---------------------------------------------------------------------------------
def parse(cls: type[M], response: httpx.Response) -> M:
    return cls.model_validate_json(response.content)


@cache
def _list_of(cls: type[M]) -> TypeAdapter[list[M]]:
    return TypeAdapter(list[cls])  # type: ignore[valid-type]


def parse_list(cls: type[M], response: httpx.Response) -> list[M]:
    return _list_of(cls).validate_json(response.content)


def embeddings(response: httpx.Response) -> Embeddings:
    data = response.json()
    dim = int(data["dim"])
    return Embeddings(data["model"], dim, np.asarray(data["embeddings"], dtype=np.float32).reshape(-1, dim))


def item(data: Any) -> Item:
    out = ItemOut.model_validate(data)
    raw: np.ndarray | bytes | None = None
    if out.input is not None:
        if "image" in out.input:
            raw = base64.b64decode(out.input["image"])
        elif "vector" in out.input:
            raw = np.asarray(out.input["vector"], dtype=np.float32)
    emb = None if out.embedding is None else np.asarray(out.embedding, dtype=np.float32)
    return Item(out.id, out.label, out.metadata, out.model, out.created_at, raw, emb)


def item_page(response: httpx.Response) -> ItemPage:
    data = response.json()
    return ItemPage([item(d) for d in data["items"]], data["total"], data["limit"], data["offset"])
