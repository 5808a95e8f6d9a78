"""Domain errors: handlers raise these, one exception handler turns them into ``{"detail": ...}``.

``ServiceError`` subclasses Starlette's ``HTTPException`` on purpose: FastAPI re-raises those when
they come out of body parsing (our body-size limit does), where any other error would become a 400.
"""

from __future__ import annotations

import logging
import math
from enum import StrEnum
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
    TOO_LARGE = "too_large"  # too many items or too large a body
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


async def service_error_handler(request: Request, exc: Exception) -> OrjsonResponse:
    """The one place domain errors become responses (FastAPI's ``{"detail": ...}`` shape)."""
    assert isinstance(exc, HTTPException)
    if exc.status_code >= 500:
        logger.warning("%s %s -> %d: %s", request.method, request.url.path, exc.status_code, exc.detail)
    return OrjsonResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def database_value_error_handler(request: Request, exc: Exception) -> OrjsonResponse:
    """A value the database refuses to store or compare (PostgreSQL: text with a NUL character, a
    string longer than its column) came from the request: a 422, and the transaction rolled back.
    Only the driver's first line is shown: it names the problem, never the SQL or a server path."""
    assert isinstance(exc, DataError)
    reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else "invalid value"
    error = ServiceError(ErrorCode.INVALID_REQUEST, f"a value in the request cannot be stored: {reason}")
    return await service_error_handler(request, error)


def _echoable(value: Any) -> Any:
    """A rejected input as JSON can carry it: NaN/Infinity become null, integers beyond 64 bits a string."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return str(value)
    if isinstance(value, dict):
        return {k: _echoable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_echoable(v) for v in value]
    return value


async def validation_error_handler(request: Request, exc: Exception) -> OrjsonResponse:
    """FastAPI's 422 body, made safe to encode: the offending ``input`` is echoed back, and a NaN or
    a 70-bit integer there must not turn the answer into a 500."""
    assert isinstance(exc, RequestValidationError)
    return OrjsonResponse({"detail": _echoable(jsonable_encoder(exc.errors()))}, status_code=422)
