"""Request and response models, and the limits on what a request may carry.

Vectors validate straight into float32 numpy arrays in one C loop (no per-float Python validation),
rejecting non-numbers, NaN/Inf and values that overflow float32. Items are told apart by a callable
discriminator, so a batch validates without trying every union member on every item. Numbers are
strict: ``true`` is not 1, ``"3"`` is not 3, ``2.0`` is not an integer and ``"NaN"`` is not a number.
Free-form metadata is bounded at the door (``INPUT_LIMITS``, listed by ``GET /info``), so that nothing
a request can store makes a later read fail.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from array import array
from contextvars import ContextVar
from datetime import datetime
from typing import Annotated, Any, Literal

import numpy as np
import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
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

# -- limits ------------------------------------------------------------------------------------------
ID_MAX_CHARS = 256  # item ids and labels (the database columns are VARCHAR(256))
METADATA_MAX_DEPTH = 16  # nesting levels of objects and arrays, the top-level object included
METADATA_MAX_KEYS = 1000  # object keys at all levels together
METADATA_MAX_BYTES = 64 * 1024  # the metadata serialised as compact JSON
METADATA_MAX_STRING_CHARS = 8192  # any one key or string value
INPUT_LIMITS: dict[str, int] = {  # fixed, not settings: they protect storage and reads, not capacity
    "id_max_chars": ID_MAX_CHARS,
    "label_max_chars": ID_MAX_CHARS,
    "metadata_max_depth": METADATA_MAX_DEPTH,
    "metadata_max_keys": METADATA_MAX_KEYS,
    "metadata_max_bytes": METADATA_MAX_BYTES,
    "metadata_max_string_chars": METADATA_MAX_STRING_CHARS,
}
JSON_INTEGERS = range(-(2**63), 2**64)  # what orjson reads and writes as integers (i64 and u64)

# Whether the request body being validated may hold a JSON true/false. The JSON decoder sets it per
# request (``service.api.deps``); anywhere else it stays True and every vector is type-checked.
BODY_MAY_HOLD_BOOLEANS: ContextVar[bool] = ContextVar("body_may_hold_booleans", default=True)


def may_hold_booleans(body: bytes) -> bool:
    """A JSON ``true`` holds a "u" and a ``false`` an "l", and no number holds either. Two memchr scans of
    the body (~40 us a MB) spare every vector a per-number type check (~30 ns a number: a third of the
    CPU of an /embed of 64 x 784 numbers), since a float32 array cannot tell a ``true`` from a 1."""
    return b"u" in body or b"l" in body


OUT_OF_RANGE = "must hold finite numbers within float32 range (no NaN, Infinity or overflow)"


def _to_vector(value: Any) -> np.ndarray:
    if not isinstance(value, list):
        raise ValueError("must be a list of numbers")
    try:
        out = np.frombuffer(array("f", value), dtype=np.float32)  # one C loop; refuses strings and null
    except TypeError:
        raise ValueError("must be a flat list of numbers (no strings, null or nested lists)") from None
    except OverflowError:  # an integer beyond float64's range
        raise ValueError(OUT_OF_RANGE) from None
    if out.size == 0:
        raise ValueError("must be a non-empty flat list of numbers")
    if BODY_MAY_HOLD_BOOLEANS.get() and bool in set(map(type, value)):
        raise ValueError("must hold numbers, not true or false")
    if not np.isfinite(out).all():  # NaN, Infinity, and values beyond float32's range
        raise ValueError(OUT_OF_RANGE)
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


def _not_a_dot_segment(value: str) -> str:
    if value in (".", ".."):  # HTTP clients resolve /items/.. to /: such an item could never be read
        raise ValueError("'.' and '..' cannot be item ids")
    return value


def _check_metadata(value: dict[str, Any]) -> dict[str, Any]:
    """Refuse metadata that would be costly to store or could fail to serialise on a later read.

    Iterative on purpose: orjson parses 1,024 levels, past Python's default recursion limit.
    """
    keys = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > METADATA_MAX_DEPTH:
                raise ValueError(
                    f"metadata is nested more than {METADATA_MAX_DEPTH} levels deep "
                    "(limit metadata_max_depth, GET /info)"
                )
            if isinstance(node, dict):
                keys += len(node)
                if keys > METADATA_MAX_KEYS:
                    raise ValueError(
                        f"metadata holds more than {METADATA_MAX_KEYS} keys "
                        "(limit metadata_max_keys, GET /info)"
                    )
                for key in node:
                    if not isinstance(key, str):
                        raise ValueError("metadata keys must be strings")
                    _check_string(key)
                stack.extend((child, depth + 1) for child in node.values())
            else:
                stack.extend((child, depth + 1) for child in node)
        elif isinstance(node, str):
            _check_string(node)
        elif isinstance(node, float) and not math.isfinite(node):
            raise ValueError("metadata numbers must be finite (no NaN or Infinity)")
        elif isinstance(node, int) and not isinstance(node, bool) and node not in JSON_INTEGERS:
            raise ValueError("metadata integers must fit in 64 bits")
        elif node is not None and not isinstance(node, bool | int | float):
            raise ValueError(f"metadata values must be JSON, not {type(node).__name__}")
    size = len(orjson.dumps(value))
    if size > METADATA_MAX_BYTES:
        raise ValueError(
            f"metadata is {size} bytes as JSON, more than {METADATA_MAX_BYTES} "
            "(limit metadata_max_bytes, GET /info)"
        )
    return value


def _check_string(text: str) -> None:
    if len(text) > METADATA_MAX_STRING_CHARS:
        raise ValueError(
            f"metadata holds a string of {len(text)} characters, more than {METADATA_MAX_STRING_CHARS} "
            "(limit metadata_max_string_chars, GET /info)"
        )
    if "\x00" in text:  # PostgreSQL refuses NUL in text and JSON
        raise ValueError("metadata strings cannot hold NUL characters")


# No whitespace, control characters or "/" (ids are path segments); labels may hold spaces.
ItemId = Annotated[
    str,
    Field(min_length=1, max_length=ID_MAX_CHARS, pattern=r"^[^\s/\x00-\x1f\x7f-\x9f]+$"),
    AfterValidator(_not_a_dot_segment),
]
Label = Annotated[str, Field(min_length=1, max_length=ID_MAX_CHARS, pattern=r"^[^\x00-\x1f\x7f-\x9f]+$")]
Metadata = Annotated[dict[str, Any], AfterValidator(_check_metadata)]


def _decimal_digits(value: Any) -> Any:
    if isinstance(value, str) and not re.fullmatch(r"-?[0-9]{1,30}", value):
        raise ValueError("must be an integer in decimal digits")
    return value


# For query-string integers: "10", not "10.0", "+10", " 10" or "1_0" (which a lax int would take).
# Put it after Query(...) in Annotated: placed first, FastAPI writes "ge" instead of "minimum" in OpenAPI.
DECIMAL_DIGITS = BeforeValidator(_decimal_digits)
StrictInt = Annotated[int, Field(strict=True)]
Threshold = Annotated[float, Field(strict=True, allow_inf_nan=False)]
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
    metadata: Metadata | None = None

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


class ImportResponse(BaseModel):
    imported: int = Field(description="rows stored")
    ids: list[str] | None = Field(None, description="the ids given to the rows, when the file had none")


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
    k: StrictInt = Field(10, ge=1)
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
    threshold: Threshold | None = Field(
        None, description="distance threshold; default the card's calibrated one"
    )


class SimilarityResponse(BaseModel):
    distance: float
    similarity: float


class VerifyResponse(SimilarityResponse):
    same: bool
    threshold: float


class ClassifyRequest(BaseModel):
    items: list[Item] = Field(min_length=1)
    k: StrictInt = Field(5, ge=1)
    weighting: Literal["uniform", "distance"] = "uniform"
    threshold: Threshold | None = Field(
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
    """The trainer's own config (``python -m trainer train`` flags as fields), plus where the model goes.

    Strict: over HTTP an integer field takes an integer, not ``2.0``, ``"2"`` or ``true``.
    """

    model_config = ConfigDict(strict=True)

    activate: bool = Field(False, description="activate the model once the job succeeds")
    collection: CollectionName = Field("default", description="the collection activate puts it in")
    force: bool = Field(False, description="with activate: skip the promotion gate")


class JobCreated(BaseModel):
    id: str
    status: str
    model_id: str


JobStatus = Literal["queued", "running", "cancelling", "succeeded", "failed", "cancelled"]


class JobOut(BaseModel):
    id: str
    status: JobStatus = Field(description="cancelling: running, asked to stop at its next step")
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
    error: str | None = Field(description="why it failed, or why its model could not be activated")
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
