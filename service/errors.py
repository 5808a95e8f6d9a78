"""Domain errors: handlers raise these, one exception handler turns them into ``{"detail": ...}``.

``ServiceError`` subclasses Starlette's ``HTTPException`` on purpose: FastAPI re-raises those when
they come out of body parsing (our body-size limit does), where any other error would become a 400.

What goes back is bounded and clean: a rejected input is echoed clipped (never megabytes, never raw
bytes), the data directory's absolute path never appears, and an unexpected exception is a bare 500
(counted by ``embed_unhandled_exceptions_total``, see ``service.metrics``).
"""

from __future__ import annotations

import logging
import math
from enum import StrEnum
from itertools import islice
from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException

from service.responses import OrjsonResponse

logger = logging.getLogger(__name__)


class ErrorCode(StrEnum):
    """Every way a request can fail on purpose; ``STATUS`` maps each to its status code."""

    INVALID_INPUT = "invalid_input"  # an item the model cannot take: wrong dimension, NaN, bad image
    INVALID_REQUEST = "invalid_request"  # an out-of-range parameter (k, threshold), an unusable data set
    BAD_REQUEST = "bad_request"  # a request that must never be honoured, e.g. a path escaping datasets/
    UNAUTHORIZED = "unauthorized"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"  # id exists, no threshold, activation in progress, incompatible model
    EMPTY_INDEX = "empty_index"
    TOO_LARGE = "too_large"  # too many items, too large a body, an upload that inflates too far
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"  # a JSON route sent anything but UTF-8 JSON
    OVERLOADED = "overloaded"
    NO_MODEL = "no_model"

    @property
    def status(self) -> int:
        return STATUS[self]


STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_INPUT: 422,
    ErrorCode.INVALID_REQUEST: 422,
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.EMPTY_INDEX: 409,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.OVERLOADED: 429,
    ErrorCode.NO_MODEL: 503,
}


class ServiceError(HTTPException):
    """A request that cannot be served, with a message that says why (and how to fix it)."""

    def __init__(self, code: ErrorCode, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code=code.status, detail=detail, headers=headers)
        self.code = code


NO_MODEL_HINT = (
    "no active model: start the service with --model PATH_TO_MODEL_DIR (or EMBED_MODEL), "
    "activate a registered one with POST /models/{id}/activate (GET /models lists them), "
    "or train one with POST /train (with activate: true)"
)


def activating(collection: str) -> ServiceError:
    """One activation per collection at a time: activate, roll back and delete wait their turn."""
    return ServiceError(
        ErrorCode.CONFLICT, f"collection {collection!r} is activating a model; retry when it is done"
    )


def moved_elsewhere(collection: str) -> ServiceError:
    """Another replica switched the collection's model; this one follows within a poll interval."""
    return ServiceError(
        ErrorCode.CONFLICT, f"collection {collection!r} changed model on another replica; retry"
    )


def no_model() -> ServiceError:
    return ServiceError(ErrorCode.NO_MODEL, NO_MODEL_HINT)


def overloaded(retry_after_s: int = 1) -> ServiceError:
    return ServiceError(
        ErrorCode.OVERLOADED,
        "the encoder queue is full; retry shortly",
        headers={"Retry-After": str(retry_after_s)},
    )


class ModelChanged(Exception):
    """The active model was swapped between embedding and writing; the caller re-embeds and retries."""


MAX_DETAIL_CHARS = 2000  # a message that echoes a 10 KB id is cut here
ECHO_CHARS = 200  # longest string echoed back from a rejected input
ECHO_ITEMS = 10  # most list elements or object keys echoed back, per level
ECHO_DEPTH = 3  # levels of a rejected input echoed back
ECHO_ERRORS = 20  # validation errors listed (a batch of 1,000 bad items gets the first 20)
INTERNAL_ERROR = "internal server error; the server logged it"


def clip(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"


def _hide_paths(request: Request, text: str) -> str:
    state = getattr(request.app.state, "service", None)
    return state.settings.paths.hide(text) if state is not None else text


async def service_error_handler(request: Request, exc: Exception) -> OrjsonResponse:
    """The one place domain errors become responses (FastAPI's ``{"detail": ...}`` shape)."""
    assert isinstance(exc, HTTPException)
    detail = exc.detail
    if isinstance(detail, str):  # messages may quote a user's id or a file name: bounded, no server paths
        detail = clip(_hide_paths(request, detail))
    if exc.status_code >= 500:
        logger.warning("%s %s -> %d: %s", request.method, request.url.path, exc.status_code, detail)
    return OrjsonResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)


async def database_value_error_handler(request: Request, exc: Exception) -> OrjsonResponse:
    """A value the database refuses to store or compare (PostgreSQL: text with a NUL character, a
    string longer than its column) came from the request: a 422, and the transaction rolled back.
    Only the driver's first line is shown: it names the problem, never the SQL or a server path."""
    assert isinstance(exc, DataError)
    reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else "invalid value"
    error = ServiceError(ErrorCode.INVALID_REQUEST, f"a value in the request cannot be stored: {reason}")
    return await service_error_handler(request, error)


def _echoable(value: Any, depth: int = 0) -> Any:
    """A rejected input, cut to a size worth echoing, as JSON can carry it.

    Strings and bytes are clipped (bytes decoded with replacement characters, so undecodable input never
    breaks the answer), containers keep their first elements down to a few levels, NaN/Infinity become
    null and integers beyond 64 bits a description. Recursing at most ``ECHO_DEPTH`` levels keeps a
    1,000-level input from exhausting the stack (``jsonable_encoder`` alone would not).
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int):  # str() of a 5,000-digit integer raises: describe it instead
        return value if -(2**63) <= value < 2**64 else f"<an integer of {value.bit_length()} bits>"
    if isinstance(value, bytes | bytearray | memoryview):
        text = bytes(value[:ECHO_CHARS]).decode("utf-8", "replace")
        return text if len(value) <= ECHO_CHARS else f"{text}... ({len(value)} bytes)"
    if isinstance(value, str):
        return clip(value, ECHO_CHARS)
    if isinstance(value, dict | list | tuple):
        if depth >= ECHO_DEPTH:
            return f"<{type(value).__name__} of {len(value)}>"
        if isinstance(value, dict):
            first = islice(value.items(), ECHO_ITEMS)
            shown = {clip(str(k), ECHO_CHARS): _echoable(v, depth + 1) for k, v in first}
            if len(value) > ECHO_ITEMS:
                shown["..."] = f"{len(value) - ECHO_ITEMS} more keys"
            return shown
        items = [_echoable(v, depth + 1) for v in value[:ECHO_ITEMS]]
        return items + ([f"... {len(value) - ECHO_ITEMS} more"] if len(value) > ECHO_ITEMS else [])
    return clip(str(value), ECHO_CHARS)  # anything else (an exception in ctx, a numpy array): its text


async def validation_error_handler(request: Request, exc: Exception) -> OrjsonResponse:
    """FastAPI's 422 body, made safe to encode: each error echoes the offending ``input``, clipped
    (``_echoable``), so bytes, a NaN, a 70-bit integer or a megabyte of JSON never break or bloat it."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    detail = [
        {
            **error,
            "loc": [p if isinstance(p, int) else clip(str(p), ECHO_CHARS) for p in error.get("loc", ())],
            "msg": clip(str(error.get("msg", ""))),
            **{key: _echoable(error[key]) for key in ("input", "ctx") if key in error},
        }
        for error in errors[:ECHO_ERRORS]
    ]
    if len(errors) > ECHO_ERRORS:
        more = f"{len(errors) - ECHO_ERRORS} more errors"
        detail.append({"type": "too_many_errors", "loc": [], "msg": more})
    return OrjsonResponse({"detail": jsonable_encoder(detail)}, status_code=422)


async def unhandled_error_handler(request: Request, exc: Exception) -> OrjsonResponse:
    """Anything unexpected: a bare 500 without internals (the server logs the traceback)."""
    logger.error("%s %s: unhandled %s", request.method, request.url.path, type(exc).__name__)
    return OrjsonResponse({"detail": INTERNAL_ERROR}, status_code=500)
