"""Request and response models.

Vectors validate straight into float32 numpy arrays with one ``np.asarray`` call (no per-float Python
validation), rejecting non-numbers, NaN/Inf and values that overflow float32. Items are told apart by a
callable discriminator, so a batch validates without trying every union member on every item.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    PlainValidator,
    Tag,
    WithJsonSchema,
    model_validator,
)

from trainer.config import TrainConfig


def _to_vector(value: Any) -> np.ndarray:
    if not isinstance(value, list):
        raise ValueError("must be a list of numbers")
    try:
        with np.errstate(over="ignore"):  # float32 overflow becomes inf, refused below
            out = np.asarray(value, dtype=np.float32)  # one C loop; numeric strings coerce, as in lax mode
    except (TypeError, ValueError):
        raise ValueError("must be a flat list of numbers") from None
    if out.ndim != 1 or out.size == 0:
        raise ValueError("must be a non-empty flat list of numbers")
    if not np.isfinite(out).all():  # NaN, Infinity, null, and values beyond float32's range
        raise ValueError("must hold finite numbers within float32 range (no NaN, Infinity, null or overflow)")
    return out


def _to_image_bytes(value: Any) -> bytes:
    if not isinstance(value, str):
        raise ValueError("must be a base64 string")
    if value.startswith("data:"):  # tolerate data URLs: "data:image/png;base64,...."
        value = value.partition(",")[2]
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"is not valid base64 ({exc})") from None
    if not data:
        raise ValueError("is empty")
    return data


Vector = Annotated[
    np.ndarray,
    PlainValidator(_to_vector),
    PlainSerializer(lambda a: a.tolist()),
    WithJsonSchema({"type": "array", "items": {"type": "number"}, "minItems": 1}),
]
ImageBytes = Annotated[
    bytes,
    PlainValidator(_to_image_bytes),
    PlainSerializer(lambda b: base64.b64encode(b).decode()),
    WithJsonSchema({"type": "string", "contentEncoding": "base64", "description": "a PNG or JPEG file"}),
]
# No NUL characters: PostgreSQL text cannot hold them, and an id or label must mean the same everywhere.
ItemId = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\s/\x00]+$")]
Label = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\x00]+$")]
ITEM_SHAPES = "an item is {'vector': [numbers]}, {'image': '<base64 PNG/JPEG>'} or a bare list of numbers"


class VectorItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    vector: Vector


class ImageItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image: ImageBytes


class IdRef(BaseModel):
    """An already indexed item, by id (where a route compares or searches)."""

    model_config = ConfigDict(extra="forbid")
    id: ItemId


RawInput = np.ndarray | bytes  # what the encoder decodes: a float32 vector or an image file


def raw_input(item: np.ndarray | VectorItem | ImageItem) -> RawInput:
    """The payload of a validated item, without its wrapper."""
    if isinstance(item, VectorItem):
        return item.vector
    if isinstance(item, ImageItem):
        return item.image
    return item


def _kind(value: Any) -> str | None:
    if isinstance(value, list | np.ndarray):
        return "list"
    if isinstance(value, dict):
        return next((k for k in ("vector", "image", "id") if k in value), None)
    return {VectorItem: "vector", ImageItem: "image", IdRef: "id"}.get(type(value))


def _new_item_kind(value: Any) -> str | None:
    if isinstance(value, list | np.ndarray):
        return "list"
    return "item" if isinstance(value, dict | NewItem) else None


_item_error = {"custom_error_type": "item_shape", "custom_error_message": ITEM_SHAPES}
Item = Annotated[
    Annotated[Vector, Tag("list")]
    | Annotated[VectorItem, Tag("vector")]
    | Annotated[ImageItem, Tag("image")],
    Discriminator(_kind, **_item_error),
]
QueryItem = Annotated[
    Annotated[Vector, Tag("list")]
    | Annotated[VectorItem, Tag("vector")]
    | Annotated[ImageItem, Tag("image")]
    | Annotated[IdRef, Tag("id")],
    Discriminator(
        _kind,
        custom_error_type="item_shape",
        custom_error_message=ITEM_SHAPES + ", or {'id': '<indexed item id>'}",
    ),
]


class NewItem(BaseModel):
    """An item to store: exactly one of ``vector`` or ``image``, with an optional id, label and metadata."""

    model_config = ConfigDict(extra="forbid")
    id: ItemId | None = None
    vector: Vector | None = None
    image: ImageBytes | None = None
    label: Label | None = None
    metadata: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_input(self) -> NewItem:
        if (self.vector is None) == (self.image is None):
            raise ValueError("an item needs exactly one of 'vector' or 'image'")
        return self

    @property
    def raw(self) -> RawInput:
        return self.vector if self.vector is not None else (self.image or b"")


NewItemIn = Annotated[
    Annotated[Vector, Tag("list")] | Annotated[NewItem, Tag("item")],
    Discriminator(_new_item_kind, **_item_error),
]


class EmbedRequest(BaseModel):
    items: list[Item] = Field(min_length=1)


class EmbedResponse(BaseModel):
    model: str
    dim: int
    embeddings: list[list[float]]


class CreateItemsRequest(BaseModel):
    items: list[NewItemIn] = Field(min_length=1)


class CreateItemsResponse(BaseModel):
    ids: list[str]


class ItemOut(BaseModel):
    id: str
    label: str | None
    metadata: dict[str, Any] | None
    model: str
    created_at: datetime
    input: dict[str, Any] | None = Field(None, description="{'vector': [...]} or {'image': base64}, if asked")
    embedding: list[float] | None = Field(None, description="the stored embedding, if asked")


class ItemList(BaseModel):
    items: list[ItemOut]
    total: int
    limit: int
    offset: int


class SearchRequest(BaseModel):
    item: QueryItem
    k: int = Field(10, ge=1)
    label: Label | None = Field(None, description="only search items with this label")


class Neighbor(BaseModel):
    id: str
    label: str | None
    distance: float
    similarity: float
    metadata: dict[str, Any] | None = None


class SearchResponse(BaseModel):
    model: str
    neighbors: list[Neighbor]


class PairRequest(BaseModel):
    a: QueryItem
    b: QueryItem


class VerifyRequest(PairRequest):
    threshold: float | None = Field(None, description="distance threshold; default the card's calibrated one")


class SimilarityResponse(BaseModel):
    distance: float
    similarity: float


class VerifyResponse(SimilarityResponse):
    same: bool
    threshold: float


class ClassifyRequest(BaseModel):
    items: list[Item] = Field(min_length=1)
    k: int = Field(5, ge=1)
    weighting: Literal["uniform", "distance"] = "uniform"
    threshold: float | None = Field(
        None, description="unknown when no neighbour is this near; default the card's threshold"
    )


class ClassifyNeighbor(BaseModel):
    id: str
    label: str | None
    distance: float


class Prediction(BaseModel):
    label: str | None
    confidence: float
    votes: dict[str, float]
    neighbors: list[ClassifyNeighbor]
    unknown: bool


class ClassifyResponse(BaseModel):
    model: str
    predictions: list[Prediction]


class ModelOut(BaseModel):
    id: str
    path: str = Field(description="the model directory, relative to the data directory")
    active: bool = Field(description="active in the default collection")
    collections: list[str] = Field(description="the collections this model serves")
    created_at: datetime
    card: dict[str, Any]
    activation: dict[str, Any] | None = Field(None, description="its latest activation (see the history)")


class ActivationOut(BaseModel):
    id: str
    status: Literal["active", "activating"]


# -- collections ---------------------------------------------------------------------------------------
CollectionName = Annotated[
    str,
    Field(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$",
        description="lower-case letters, digits, '-' and '_', starting with a letter or digit, at most 64",
    ),
]


class CollectionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: CollectionName
    model: str | None = Field(None, max_length=128, description="a registered model id to activate at once")


class ActivateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(max_length=128, description="a registered model id (GET /models)")
    force: bool = Field(False, description="activate even when the promotion gate finds it worse")


class HistoryEntry(BaseModel):
    seq: int
    collection: str
    model: str
    previous_model: str | None
    kind: Literal["activation", "rollback"]
    requested_by: str = Field(description="'request', 'job <id>' or 'start-up'")
    status: Literal["activating", "active", "failed", "refused"]
    gate: dict[str, Any] | None = Field(
        None, description="the promotion gate: checked, passed, reason, sample, current and candidate numbers"
    )
    error: str | None
    done: int
    total: int | None
    started_at: datetime
    finished_at: datetime | None


class CollectionOut(BaseModel):
    name: str
    model: str | None = Field(description="the active model (null: the collection accepts no items yet)")
    previous_model: str | None = Field(description="what POST .../rollback returns to")
    size: int = Field(description="indexed items")
    index: dict[str, Any] = Field(description="type (flat, hnsw, ivf) and configured type")
    activation: HistoryEntry | None = Field(None, description="the latest activation or rollback")
    created_at: datetime
    activated_at: datetime | None


class ActivationAccepted(BaseModel):
    status: Literal["active", "activating"]
    model: str
    activation: int | None = Field(None, description="the history entry that follows its progress")


# -- training jobs and data sets ---------------------------------------------------------------------
class TrainRequest(TrainConfig):
    """The trainer's own config (``python -m trainer train`` flags as fields), plus where the model goes."""

    activate: bool = Field(False, description="activate the model once the job succeeds")
    collection: CollectionName = Field("default", description="the collection activate puts it in")
    force: bool = Field(False, description="with activate: skip the promotion gate")


class JobCreated(BaseModel):
    id: str
    status: str
    model_id: str


class JobOut(BaseModel):
    id: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    model_id: str
    dataset: str
    test_dataset: str | None = Field(None, description="the separate test set, if the request named one")
    config: dict[str, Any]
    collection: str = Field("default", description="the collection activate puts the model in")
    force: bool = Field(False, description="activate without the promotion gate")
    activate: bool
    activation: str | None = Field(
        None, description="pending, activating, active, failed: <reason> or refused: <the gate's numbers>"
    )
    progress: dict[str, Any] = Field(description="phase, epoch/epochs, step/steps, loss")
    metrics: list[dict[str, Any]] = Field(description="one record per finished epoch (validation metrics)")
    result: dict[str, Any] | None = Field(None, description="final test metrics of the exported model")
    error: str | None
    log: str = Field(description="the last lines of the run's log")
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
    model_id: str
    markdown: str
    files: dict[str, str] = Field(description="file name -> URL of each plot and file of the report")
