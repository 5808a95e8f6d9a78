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
    WithJsonSchema(
        {
            "type": "array",
            "items": {"type": "number"},
            "minItems": 1,
            "description": "numbers, as many as the model takes (GET /info: model.input)",
        }
    ),
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


# -- examples (for /docs: a digits model, as the README's quick start trains) -------------------------
# The first digit of scikit-learn's digits (a 0) as 64 values in 0..16, and a 1 as an 8x8 grayscale PNG.
DIGIT_ZERO = [
    0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0, 0, 3, 15, 2, 0, 11, 8, 0, 0, 4, 12, 0, 0, 8, 8, 0,
    0, 5, 8, 0, 0, 9, 8, 0, 0, 4, 11, 0, 1, 12, 7, 0, 0, 2, 14, 5, 10, 12, 0, 0, 0, 0, 6, 13, 10, 0, 0, 0,
]  # fmt: skip
DIGIT_ONE_PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAAAAADhZOFXAAAAPUlEQVR42jXKMRGAMBAAsNwbQAISWgnvAClYqwMkgBOogmfg2DI"
    "EjnMj8PQkaOmC/a5awVLVvkP/gWAOyQvvfAxP7LmmhQAAAABJRU5ErkJggg=="
)
EXAMPLE_MODEL = "digits-1"


def _examples(*values: dict[str, Any]) -> ConfigDict:
    """Request examples, shown by /docs and /redoc (tests check each one validates and is accepted)."""
    return ConfigDict(json_schema_extra={"examples": list(values)})


# -- items ---------------------------------------------------------------------------------------------
class VectorItem(BaseModel):
    """An item given as numbers."""

    model_config = ConfigDict(extra="forbid")
    vector: Vector = Field(
        description="as many numbers as the model takes: input.dim, or an image model's C*H*W pixels"
    )


class ImageItem(BaseModel):
    """An item given as an image file, decoded as the model card prescribes."""

    model_config = ConfigDict(extra="forbid")
    image: ImageBytes = Field(description="a base64 PNG or JPEG file (a data: URL is accepted too)")


class IdRef(BaseModel):
    """An already indexed item, by id (where a route compares or searches)."""

    model_config = ConfigDict(extra="forbid")
    id: ItemId = Field(description="the id of an item stored in the collection: its stored embedding is used")


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
    id: ItemId | None = Field(
        None,
        description="unique in the collection; default a random uuid4 hex. At most 256 characters, without "
        "whitespace, '/' or control characters, and not '.' or '..'",
    )
    vector: Vector | None = Field(None, description="the input as numbers (exactly one of vector or image)")
    image: ImageBytes | None = Field(
        None, description="the input as a base64 PNG or JPEG file (exactly one of vector or image)"
    )
    label: Label | None = Field(
        None,
        description="its class, at most 256 characters: /classify votes with it, training on "
        "{'source': 'items'} learns from it",
    )
    metadata: Metadata | None = Field(
        None,
        description="any JSON object, returned by GET /items and /search (size limits: GET /info)",
    )

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
    """Items to embed; nothing is stored."""

    model_config = _examples(
        {"items": [DIGIT_ZERO]},
        {"items": [{"vector": DIGIT_ZERO}, {"image": DIGIT_ONE_PNG}]},
    )
    items: list[Item] = Field(
        min_length=1, description="1 to max_items items (GET /info: limits): vectors, images or bare lists"
    )


class EmbedResponse(BaseModel):
    """The embeddings of the items, in request order."""

    model: str = Field(description="the model that embedded them")
    dim: int = Field(description="the embedding width")
    embeddings: list[list[float]] = Field(description="one embedding per item, in request order")


class CreateItemsRequest(BaseModel):
    """Items to embed, store and index, all or nothing."""

    model_config = _examples(
        {
            "items": [
                {"id": "zero-1", "vector": DIGIT_ZERO, "label": "0", "metadata": {"source": "scanner-2"}},
                {"id": "one-1", "image": DIGIT_ONE_PNG, "label": "1"},
            ]
        },
        {"items": [DIGIT_ZERO]},
    )
    items: list[NewItemIn] = Field(
        min_length=1,
        description="1 to max_items items (GET /info: limits); a bare list of numbers is an unlabelled "
        "vector item with a random id",
    )


class CreateItemsResponse(BaseModel):
    """The ids of the stored items."""

    ids: list[str] = Field(description="in request order, generated ones included")


class ImportResponse(BaseModel):
    """What a bulk import stored."""

    imported: int = Field(description="rows stored")
    ids: list[str] | None = Field(None, description="the ids given to the rows, when the file had none")


class ItemOut(BaseModel):
    """A stored item."""

    id: str = Field(description="unique in its collection")
    label: str | None = Field(description="its class, or null")
    metadata: dict[str, Any] | None = Field(description="as stored, or null")
    model: str | None = Field(
        description="the collection's active model, which the embedding comes from (null: none loaded)"
    )
    created_at: datetime = Field(description="when it was stored (UTC)")
    input: dict[str, Any] | None = Field(None, description="{'vector': [...]} or {'image': base64}, if asked")
    embedding: list[float] | None = Field(None, description="the stored embedding, if asked")


class ItemList(BaseModel):
    """A page of items, oldest first."""

    items: list[ItemOut] = Field(description="this page, oldest first (without input or embedding)")
    total: int = Field(description="every item that matches (with the label, if one was asked)")
    limit: int = Field(description="the page size asked")
    offset: int = Field(description="the items skipped")


class SearchRequest(BaseModel):
    """A query item and how many neighbours to return."""

    model_config = _examples(
        {"item": {"id": "zero-1"}, "k": 5},
        {"item": DIGIT_ZERO, "k": 3, "label": "0"},
        {"item": {"image": DIGIT_ONE_PNG}, "k": 10},
    )
    item: QueryItem = Field(description="an item, or {'id': ...} of a stored one")
    k: StrictInt = Field(10, ge=1, description="how many neighbours, 1 to max_k (GET /info: limits)")
    label: Label | None = Field(None, description="only search items with this label")


class Neighbor(BaseModel):
    """A stored item near the query."""

    id: str = Field(description="the stored item's id")
    label: str | None = Field(description="its label, or null")
    distance: float = Field(description="cosine models: 1 - cos; euclidean models: the L2 distance")
    similarity: float = Field(description="cosine models: cos; euclidean models: 1 / (1 + distance)")
    metadata: dict[str, Any] | None = Field(None, description="its metadata, or null")


class SearchResponse(BaseModel):
    """The nearest stored items."""

    model: str = Field(description="the model that answered")
    neighbors: list[Neighbor] = Field(description="nearest first; at most k, fewer if the index is smaller")


class PairRequest(BaseModel):
    """Two items to compare; either may be a stored item's id."""

    model_config = _examples(
        {"a": {"id": "zero-1"}, "b": {"id": "one-1"}},
        {"a": DIGIT_ZERO, "b": {"image": DIGIT_ONE_PNG}},
    )
    a: QueryItem = Field(description="an item, or {'id': ...} of a stored one")
    b: QueryItem = Field(description="an item, or {'id': ...} of a stored one")


class VerifyRequest(PairRequest):
    """Two items, and the distance under which they count as the same."""

    model_config = _examples(
        {"a": DIGIT_ZERO, "b": {"id": "zero-1"}},
        {"a": {"id": "zero-1"}, "b": {"image": DIGIT_ONE_PNG}, "threshold": 0.3},
    )
    threshold: Threshold | None = Field(
        None, description="distance threshold; default the card's calibrated one"
    )


class SimilarityResponse(BaseModel):
    """How far apart two items are."""

    distance: float = Field(description="cosine models: 1 - cos; euclidean models: the L2 distance")
    similarity: float = Field(description="cosine models: cos; euclidean models: 1 / (1 + distance)")


class VerifyResponse(SimilarityResponse):
    """Whether two items are the same class or identity."""

    same: bool = Field(description="distance <= threshold")
    threshold: float = Field(description="the threshold applied: the request's, else the card's")


class ClassifyRequest(BaseModel):
    """Items to label by a vote of their nearest labelled neighbours."""

    model_config = _examples(
        {"items": [DIGIT_ZERO], "k": 5},
        {"items": [{"image": DIGIT_ONE_PNG}, DIGIT_ZERO], "k": 3, "weighting": "distance", "threshold": 0.4},
    )
    items: list[Item] = Field(min_length=1, description="1 to max_items items (GET /info: limits)")
    k: StrictInt = Field(5, ge=1, description="neighbours that vote, 1 to max_k (GET /info: limits)")
    weighting: Literal["uniform", "distance"] = Field(
        "uniform",
        description="uniform: one vote per neighbour; distance: 1/d per neighbour (when some lie at "
        "distance 0, only they vote)",
    )
    threshold: Threshold | None = Field(
        None, description="unknown when no neighbour is this near; default the card's threshold"
    )


class ClassifyNeighbor(BaseModel):
    """A neighbour that took part in the vote."""

    id: str = Field(description="the stored item's id")
    label: str | None = Field(description="its label (unlabelled neighbours do not vote)")
    distance: float = Field(description="its distance to the item")


class Prediction(BaseModel):
    """The vote for one item."""

    label: str | None = Field(description="the winning label; null when unknown")
    confidence: float = Field(description="the winner's share of the votes (0 when unknown)")
    votes: dict[str, float] = Field(description="label -> its votes")
    neighbors: list[ClassifyNeighbor] = Field(description="the k nearest, nearest first")
    unknown: bool = Field(description="no labelled neighbour lies within the threshold")


class ClassifyResponse(BaseModel):
    """One prediction per item."""

    model: str = Field(description="the model that answered")
    predictions: list[Prediction] = Field(description="in request order")


class ModelOut(BaseModel):
    """A registered model."""

    id: str = Field(description="the model id (its card's model_id)")
    path: str = Field(description="the model directory, relative to the data directory")
    active: bool = Field(description="active in the default collection")
    collections: list[str] = Field(description="the collections this model serves")
    created_at: datetime = Field(description="when it was registered (UTC)")
    card: dict[str, Any] = Field(
        description="its model card (model.json): input, loss, data set, metrics, calibrated threshold"
    )
    activation: dict[str, Any] | None = Field(None, description="its latest activation (see the history)")


class ActivationOut(BaseModel):
    """What became of an activation in the default collection."""

    id: str = Field(description="the model")
    status: Literal["active", "activating"] = Field(
        description="activating: re-embedding the items in the background; active: it already was"
    )


# -- collections ---------------------------------------------------------------------------------------
CollectionName = Annotated[
    str,
    Field(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$",
        description="lower-case letters, digits, '-' and '_', starting with a letter or digit, at most 64",
    ),
]


class CollectionCreate(BaseModel):
    """A new collection's name, and optionally its first model."""

    model_config = ConfigDict(
        extra="forbid", **_examples({"name": "digits", "model": EXAMPLE_MODEL}, {"name": "products"})
    )
    name: CollectionName
    model: str | None = Field(None, max_length=128, description="a registered model id to activate at once")


class ActivateRequest(BaseModel):
    """The model to put live in a collection."""

    model_config = ConfigDict(
        extra="forbid", **_examples({"model": EXAMPLE_MODEL}, {"model": EXAMPLE_MODEL, "force": True})
    )
    model: str = Field(max_length=128, description="a registered model id (GET /models)")
    force: bool = Field(False, description="activate even when the promotion gate finds it worse")


class HistoryEntry(BaseModel):
    """One activation or rollback of a collection."""

    seq: int = Field(description="the entry's number (increasing)")
    collection: str = Field(description="the collection")
    model: str = Field(description="the model activated, or rolled back to")
    previous_model: str | None = Field(description="the model active before, or null")
    kind: Literal["activation", "rollback"] = Field(description="activation or rollback")
    requested_by: str = Field(description="'request', 'job <id>' or 'start-up'")
    status: Literal["activating", "active", "failed", "refused"] = Field(
        description="activating: re-embedding; active: done; failed: see error; refused: by the gate"
    )
    gate: dict[str, Any] | None = Field(
        None, description="the promotion gate: checked, passed, reason, sample, current and candidate numbers"
    )
    error: str | None = Field(description="why it failed, or null")
    done: int = Field(description="items embedded so far")
    total: int | None = Field(description="items to embed, null until counted")
    started_at: datetime = Field(description="when it began (UTC)")
    finished_at: datetime | None = Field(description="when it ended (UTC); null while activating")


class CollectionOut(BaseModel):
    """A collection: its size, active model and latest activation."""

    name: str = Field(description="the collection's name")
    model: str | None = Field(description="the active model (null: the collection accepts no items yet)")
    previous_model: str | None = Field(description="what POST .../rollback returns to")
    size: int = Field(description="indexed items")
    index: dict[str, Any] = Field(description="type (flat, hnsw, ivf) and configured type")
    activation: HistoryEntry | None = Field(None, description="the latest activation or rollback")
    created_at: datetime = Field(description="when it was created (UTC)")
    activated_at: datetime | None = Field(
        description="when its model was last activated or rolled back (UTC)"
    )


class ActivationAccepted(BaseModel):
    """An activation under way, or done at once."""

    status: Literal["active", "activating"] = Field(
        description="activating: re-embedding in the background (202); active: done (200)"
    )
    model: str = Field(description="the model activated, or rolled back to")
    activation: int | None = Field(None, description="the history entry that follows its progress")


# -- training jobs and data sets ---------------------------------------------------------------------
class TrainRequest(TrainConfig):
    """The trainer's own config (``python -m trainer train`` flags as fields), plus where the model goes.

    Strict: over HTTP an integer field takes an integer, not ``2.0``, ``"2"`` or ``true``.
    """

    model_config = ConfigDict(
        strict=True,
        **_examples(
            {"dataset": "digits", "epochs": 10, "name": "digits-2", "activate": True},
            {
                "dataset": {"source": "items", "collection": "default"},
                "loss": "triplet",
                "mining": "semihard",
                "margin": 0.2,
                "epochs": 5,
                "batch_size": 32,
                "samples_per_class": 4,
            },
        ),
    )

    activate: bool = Field(False, description="activate the model once the job succeeds")
    collection: CollectionName = Field("default", description="the collection activate puts it in")
    force: bool = Field(False, description="with activate: skip the promotion gate")


class JobCreated(BaseModel):
    """A queued training job."""

    id: str = Field(description="the job id (GET /jobs/{id})")
    status: str = Field(description="queued")
    model_id: str = Field(description="the id its model will have")


JobStatus = Literal["queued", "running", "cancelling", "succeeded", "failed", "cancelled"]


class JobOut(BaseModel):
    """A training job: its state, progress, metrics and log."""

    id: str = Field(description="the job id")
    status: JobStatus = Field(description="cancelling: running, asked to stop at its next step")
    model_id: str = Field(description="the id its model gets when it succeeds")
    dataset: str = Field(description="the data set as the worker loads it (paths relative to the data dir)")
    test_dataset: str | None = Field(None, description="the separate test set, if the request named one")
    config: dict[str, Any] = Field(description="the training config, as queued")
    collection: str = Field("default", description="the collection activate puts the model in")
    force: bool = Field(False, description="activate without the promotion gate")
    activate: bool = Field(description="activate the model once the job succeeds")
    activation: str | None = Field(
        None, description="pending, activating, active, failed: <reason> or refused: <the gate's numbers>"
    )
    progress: dict[str, Any] = Field(description="phase, epoch/epochs, step/steps, loss")
    metrics: list[dict[str, Any]] = Field(description="one record per finished epoch (validation metrics)")
    result: dict[str, Any] | None = Field(None, description="final test metrics of the exported model")
    error: str | None = Field(description="why it failed, or why its model could not be activated")
    log: str = Field(description="the last lines of the run's log")
    attempts: int = Field(description="runs started; a job whose worker died resumes from its checkpoint")
    worker_id: str | None = Field(description="the worker running it (host:pid), or null")
    cancel_requested: bool = Field(description="a cancel was asked for")
    created_at: datetime = Field(description="when it was queued (UTC)")
    started_at: datetime | None = Field(description="when a worker first took it (UTC)")
    finished_at: datetime | None = Field(description="when it ended (UTC)")
    heartbeat_at: datetime | None = Field(description="the running worker's last sign of life (UTC)")


class JobList(BaseModel):
    """A page of jobs, newest first."""

    jobs: list[JobOut] = Field(description="this page, newest first")
    total: int = Field(description="every job that matches (with the status, if one was asked)")
    limit: int = Field(description="the page size asked")
    offset: int = Field(description="the jobs skipped")


class DatasetOut(BaseModel):
    """An uploaded data set, as validated and kept for training."""

    id: str = Field(description="pass it as dataset (or test_dataset) to POST /train")
    filename: str = Field(
        description="its file under the data directory's datasets/ (a .csv is kept as .npz)"
    )
    original_name: str = Field(description="the uploaded file's name")
    n: int = Field(description="samples")
    classes: list[str] = Field(description="label names")
    shape: list[int] = Field(description="one sample's shape: [D] for vectors, [C, H, W] for images")
    size_bytes: int = Field(description="the kept file's size")
    created_at: datetime = Field(description="when it was uploaded (UTC)")


class ReportOut(BaseModel):
    """A model's training report."""

    model_id: str = Field(description="the model")
    markdown: str = Field(description="report.md")
    files: dict[str, str] = Field(description="file name -> URL of each plot and file of the report")


# -- health ------------------------------------------------------------------------------------------
class HealthOut(BaseModel):
    """The process answers."""

    status: Literal["ok"] = Field(description="always ok")


class ReadyOut(BaseModel):
    """The default collection can serve."""

    status: Literal["ready"] = Field(description="always ready (else a 503)")
    model: str = Field(description="the default collection's active model")
    index_size: int = Field(description="items in its index")


class DeletedOut(BaseModel):
    """How many items went."""

    deleted: int = Field(description="the items deleted")


# -- errors (documentation: the handlers in service.errors write these shapes) --------------------------
class ErrorOut(BaseModel):
    """A refused request: FastAPI's shape, with a message that says what to change."""

    detail: str = Field(description="what was wrong, and how to fix it")


class FieldError(BaseModel):
    """One part of a request that failed validation (FastAPI's shape)."""

    type: str = Field(description="the error type, e.g. missing, greater_than_equal, item_shape")
    loc: list[str | int] = Field(description="where: 'body', 'query' or 'path', then field names and indexes")
    msg: str = Field(description="what is wrong")
    input: Any = Field(None, description="the offending input, clipped (200 characters, 10 elements a level)")
    ctx: dict[str, Any] | None = Field(None, description="the constraint that failed, e.g. {'ge': 1}")


class ValidationErrorOut(BaseModel):
    """A 422: FastAPI's list of field errors (at most 20), or one message for a value the model or the
    data refuse (a vector of the wrong length, an undecodable image, an out-of-range k)."""

    detail: list[FieldError] | str = Field(description="the field errors, or one message")
