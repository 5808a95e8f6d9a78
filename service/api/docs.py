"""The OpenAPI document's shared parts: each route's error answers with example bodies, and the finish.

A router lists the ways a route can fail as ``Problem``s, ``responses=errors(UNKNOWN_ITEM, ...)``; each
status becomes a documented response with the ``{"detail": ...}`` model and one named example per
problem. The messages are the ones the code writes (taken from it where it exports them), with the
default limits filled in. The item routes are mounted twice, flat (collection ``default``) and under
``/collections/{name}``; ``ItemRouteDocs`` adds what differs: an unknown or malformed collection name,
and a collection without a model (503 flat, 409 named).

``install(app)`` finishes what FastAPI cannot be told per route: tag descriptions, the optional bearer
scheme, and no 422 on routes that cannot answer one (FastAPI adds it to every route with a parameter).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from service.api.deps import named_catalogue
from service.catalogue import EMPTY_INDEX
from service.config import Settings
from service.datasets import UNPACKED_FACTOR
from service.errors import NO_MODEL_HINT, activating, moved_elsewhere, overloaded
from service.items import not_found
from service.schemas import EXAMPLE_MODEL, ErrorOut, ValidationErrorOut

DEFAULTS = {name: field.default for name, field in Settings.model_fields.items()}


@dataclass(frozen=True)
class Problem:
    """One way a request can fail: its status, what went wrong, and an example of the body's ``detail``."""

    status: int
    title: str
    detail: str | list[dict[str, Any]]


def field_error(loc: list[str | int], type_: str, msg: str, value: Any, **ctx: Any) -> list[dict[str, Any]]:
    """A 422 ``detail`` as FastAPI writes it for one failed field."""
    error = {"type": type_, "loc": loc, "msg": msg, "input": value}
    return [{**error, "ctx": ctx}] if ctx else [error]


# -- shared by many routes -----------------------------------------------------------------------------
UNAUTHORIZED = Problem(
    401,
    "no or wrong API key (only when the service runs with --api-key)",
    "missing or invalid API key: send 'Authorization: Bearer <key>'",
)
NOT_JSON = Problem(
    415,
    "the body is not declared UTF-8 JSON",
    "the body must be JSON, sent with 'Content-Type: application/json' (got 'text/plain')",
)
BODY_TOO_LARGE = Problem(
    413,
    "the body is larger than --max-body-bytes",
    f"request body exceeds the limit of {DEFAULTS['max_body_bytes']} bytes (--max-body-bytes)",
)
UPLOAD_TOO_LARGE = Problem(
    413,
    "the upload is larger than --max-upload-bytes",
    f"request body exceeds the limit of {DEFAULTS['max_upload_bytes']} bytes (--max-upload-bytes)",
)
UNPACKS_TOO_FAR = Problem(
    413,
    f"a .npz that unpacks beyond {UNPACKED_FACTOR} x --max-upload-bytes (a gzip'd .csv: beyond the limit)",
    f"file: its arrays unpack to more than {UNPACKED_FACTOR * DEFAULTS['max_upload_bytes']} bytes "
    f"({UNPACKED_FACTOR} x --max-upload-bytes)",
)
TOO_MANY_ITEMS = Problem(
    413,
    "more items than --max-items",
    f"{DEFAULTS['max_items'] + 1} items in one request; the limit is {DEFAULTS['max_items']} (--max-items)",
)
MISSING_FIELD = Problem(
    422, "a field is missing or invalid", field_error(["body", "items"], "missing", "Field required", {})
)
NOT_JSON_TEXT = Problem(
    422,
    "the body is not JSON in UTF-8",
    field_error(["body", 1], "json_invalid", "JSON decode error", {}, error="unexpected end of data"),
)
BAD_ITEM = Problem(
    422,
    "an item the model cannot take",
    f"item 0: vector has 3 values, but model {EXAMPLE_MODEL} expects images (1x8x8) or vectors of length 64",
)
BAD_ITEM_SHAPE = Problem(
    422,
    "not an item",
    field_error(
        ["body", "items", 0],
        "item_shape",
        "an item is {'vector': [numbers]}, {'image': '<base64 PNG/JPEG>'} or a bare list of numbers",
        {"text": "hi"},
    ),
)
BAD_K = Problem(
    422,
    "k beyond --max-k",
    f"k must be between 1 and {DEFAULTS['max_k']} (--max-k), got {DEFAULTS['max_k'] + 1}",
)
BAD_LIMIT = Problem(
    422,
    "a query parameter out of range",
    field_error(
        ["query", "limit"], "greater_than_equal", "Input should be greater than or equal to 1", "0", ge=1
    ),
)
BAD_FLAG = Problem(
    422,
    "a query flag that is not a boolean",
    field_error(
        ["query", "include_input"],
        "bool_parsing",
        "Input should be a valid boolean, unable to interpret input",
        "maybe",
    ),
)
UNKNOWN_ITEM = Problem(404, "an unknown item id", not_found("zero-2").detail)
UNKNOWN_MODEL = Problem(404, "an unknown model id", "no registered model with id 'digits-9' (GET /models)")
EMPTY = Problem(409, "the index is empty", EMPTY_INDEX)
MODEL_CHANGING = Problem(
    409, "the active model changed three times during the request", "the active model keeps changing; retry"
)
NO_THRESHOLD = Problem(
    409,
    "no threshold: the card has none and the request gave none",
    f"model {EXAMPLE_MODEL} has no calibrated threshold; pass 'threshold' (a distance)",
)
REPEATED_IDS = Problem(422, "an id twice in one request", "ids repeated within the request: zero-1")
IDS_EXIST = Problem(
    409,
    "an id exists already (without upsert=true)",
    "1 item id(s) already exist (zero-1); use ?upsert=true to replace them",
)
BAD_IMPORT = Problem(
    422,
    "the body is not a .npz the model can take",
    "import: rows of x have 3 values; digits-1 takes 64",
)
ALL_REQUIRED = Problem(422, "all=true is missing", "pass all=true to delete every item of the collection")
OVERLOADED = Problem(429, "the encoder queue is full (see Retry-After)", overloaded().detail)
NO_MODEL = Problem(503, "the default collection has no model", NO_MODEL_HINT)
SHUTTING_DOWN = Problem(503, "the service is shutting down", "the service is shutting down")

# -- collections ---------------------------------------------------------------------------------------
UNKNOWN_COLLECTION = Problem(404, "an unknown collection", "no collection named 'faces' (GET /collections)")
BAD_COLLECTION_NAME = Problem(
    422,
    "a malformed collection name",
    "collection name 'Faces' is not valid: lower-case letters, digits, '-' and '_', starting with a letter "
    "or digit, at most 64 characters",
)
COLLECTION_WITHOUT_MODEL = Problem(
    409,
    "the collection has no model yet",
    'collection \'digits\' has no model yet: POST /collections/digits/activate {"model": "<id>"} '
    '(GET /models lists them), or train one with POST /train {"collection": "digits", "activate": true, ...}',
)
ACTIVATING = Problem(409, "an activation is under way", activating("digits").detail)
MOVED_ELSEWHERE = Problem(
    409, "another replica switched the collection's model a moment ago", moved_elsewhere("digits").detail
)
GATE_REFUSED = Problem(
    409,
    "the promotion gate finds the model worse",
    "model digits-2 was not activated in collection 'digits': worse than the active model digits-1 on 1797 "
    "labelled items (knn_accuracy 0.9012 vs 0.9705, map_at_r 0.7011 vs 0.8820; tolerance 0.01); "
    'pass "force": true to activate it anyway',
)
UNREADABLE_ITEMS = Problem(
    409,
    "the model cannot re-embed the stored items",
    "model vectors-3 takes vectors of length 3, but collection 'digits' holds 120 vector item(s) of length "
    "64: it could not re-embed them (use another collection, or empty this one first)",
)
UNLOADABLE_MODEL = Problem(
    409,
    "the model's files cannot be loaded",
    "model digits-2 cannot be loaded: <data-dir>/models/digits-2/encoder.pt is missing",
)


class ItemRouteDocs:
    """What differs between an item route's two mounts: flat (``default``) or under /collections/{name}."""

    def __init__(self, catalogue_dep: Callable[..., Any]) -> None:
        self.named = catalogue_dep is named_catalogue

    def summary(self, text: str) -> str:
        return f"{text} (in a collection)" if self.named else text

    def errors(self, *problems: Problem, needs_model: bool = False) -> dict[int | str, dict[str, Any]]:
        """``needs_model``: the route embeds or searches, so it needs the collection's model."""
        extra: list[Problem] = []
        if self.named:
            extra += [UNKNOWN_COLLECTION, BAD_COLLECTION_NAME]
        if needs_model:
            extra += [COLLECTION_WITHOUT_MODEL, SHUTTING_DOWN] if self.named else [NO_MODEL]
        return errors(*problems, *extra)


JSON_BODY = (NOT_JSON, BODY_TOO_LARGE, MISSING_FIELD, NOT_JSON_TEXT)  # every route that reads a JSON body
HEADERS = {
    401: {
        "WWW-Authenticate": {"description": 'Bearer realm="embedding-service"', "schema": {"type": "string"}}
    },
    429: {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}},
}


def errors(*problems: Problem, public: bool = False) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route: its problems by status, each an example of the body (401 included
    unless the route is ``public``: every route but /health and /ready needs the key when one is set)."""
    listed = problems if public else (UNAUTHORIZED, *problems)
    out: dict[int | str, dict[str, Any]] = {}
    for status in sorted({p.status for p in listed}):
        group = list({p.title: p for p in listed if p.status == status}.values())
        examples = {_slug(p.title): {"summary": p.title, "value": {"detail": p.detail}} for p in group}
        out[status] = {
            "model": ValidationErrorOut if status == 422 else ErrorOut,
            "description": _sentence("; ".join(p.title for p in group)),
            "content": {"application/json": {"examples": examples}},
            **({"headers": HEADERS[status]} if status in HEADERS else {}),
        }
    return out


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:60]


def example(value: Any, summary: str | None = None) -> dict[str, dict[str, Any]]:
    """``openapi_examples=`` of a path or query parameter: one example, named by its value."""
    return {str(value): {"summary": summary or str(value), "value": value}}


# -- the document's finish -----------------------------------------------------------------------------
TAGS = [
    {"name": "items", "description": "Store, read, list and delete items (embedded and indexed on write)."},
    {"name": "search", "description": "Nearest stored items, and the distance between two items."},
    {"name": "verify", "description": "Same class or identity? By the card's calibrated threshold."},
    {"name": "classify", "description": "Label items by a vote of their nearest labelled items."},
    {"name": "embed", "description": "Embeddings of items, nothing stored."},
    {
        "name": "collections",
        "description": "Named sets of items, each with its own model and index; activation with a promotion "
        "gate, rollback, history. Every item route also works under /collections/{name}.",
    },
    {"name": "models", "description": "The model registry, its training reports, activation in default."},
    {"name": "training", "description": "Queue a training job from the trainer's config."},
    {"name": "jobs", "description": "Training jobs: progress, metrics, log, cancel."},
    {"name": "datasets", "description": "Upload .npz or .csv data sets to train on."},
    {"name": "health", "description": "Liveness, readiness, versions and limits, Prometheus metrics."},
]
DESCRIPTION = """\
An *item* is `{"vector": [numbers]}`, `{"image": "<base64 PNG or JPEG>"}` or a bare list of numbers; where a
route compares or searches, `{"id": "<stored item id>"}` stands in for one. The flat item routes (`/items`,
`/search`, ...) mean the collection `default`; the same routes under `/collections/{name}` mean that one.

Errors keep FastAPI's shape, `{"detail": "..."}` (a 422 may hold FastAPI's list of field errors instead),
and each route lists the ones it can answer. With `--api-key`, every route but `/health` and `/ready`
needs `Authorization: Bearer <key>`. Timestamps are ISO 8601 in UTC (`...Z`).

The request examples are for a digits model (8x8 images, or 64 values in 0..16), as the README's quick
start trains."""
BEARER = {
    "type": "http",
    "scheme": "bearer",
    "description": "The service's --api-key (EMBED_API_KEY); needed only when one is set.",
}


def install(app: FastAPI) -> None:
    """Make ``app.openapi`` return FastAPI's document with ``finish`` applied (built once, then cached)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            finish(build())
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


FASTAPI_422 = "#/components/schemas/HTTPValidationError"


def finish(spec: dict[str, Any]) -> None:
    """Tags, the bearer scheme, the multipart bodies' descriptions; FastAPI's own 422 removed where a
    route did not list one (our routes list theirs, with ``ValidationErrorOut``: FastAPI's is on a route
    that cannot answer 422, e.g. one whose only parameter is a free string in the path); and error
    schemas under application/json where FastAPI put them under the route's own media type."""
    spec["info"]["description"] = DESCRIPTION
    spec["tags"] = TAGS
    components = spec.setdefault("components", {})
    components["securitySchemes"] = {"bearer": BEARER}
    schemas = components.setdefault("schemas", {})
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            if FASTAPI_422 in json.dumps(responses.get("422", {})):
                del responses["422"]
            for status, response in responses.items():  # errors are JSON, also on a text route (/metrics)
                content = response.get("content", {})
                if int(status) >= 400 and set(content) - {"application/json"}:
                    schema = next(c["schema"] for c in content.values() if "schema" in c)
                    response["content"] = {
                        "application/json": {**content["application/json"], "schema": schema}
                    }
            if "401" in responses:
                operation["security"] = [{"bearer": []}, {}]  # {}: no key needed when none is set
            form = operation.get("requestBody", {}).get("content", {}).get("multipart/form-data")
            if form is not None:
                name = form["schema"]["$ref"].rsplit("/", 1)[1]
                schemas[name]["description"] = f"The form fields of {method.upper()} {path}."
    if FASTAPI_422 not in json.dumps(spec["paths"]):
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]
