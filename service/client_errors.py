"""The client's errors: one ``ApiError`` subclass per common status, raised for every non-2xx answer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx


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
        super().__init__(f"{where}: {detail_text(detail)}")


class AuthenticationError(ApiError):
    """401: the API key is missing or wrong."""


class NotFoundError(ApiError):
    """404: no item, collection, model, job or data set with that id (or a model without a report)."""


class ConflictError(ApiError):
    """409: the id or collection exists (pass ``upsert=True`` for items), the index is empty, no threshold,
    a collection without a model, an activation refused (the promotion gate's refusal names both models'
    numbers in ``detail``; ``force=True`` overrides it), nothing to roll back to, a model or pending job
    has the training run's name, or the job is over and cannot be cancelled."""


class PayloadTooLargeError(ApiError):
    """413: too many items or too large a body; split the request."""


class UnprocessableError(ApiError):
    """422: an item the model cannot take, a parameter or name out of range, or a training config or data
    set the service refuses."""


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
    """``wait_active``: the model's activation failed or was refused (every request succeeded);
    ``reason`` says why (a refusal names the promotion gate's numbers)."""

    def __init__(self, model_id: str, reason: str) -> None:
        self.model_id = model_id
        self.reason = reason
        super().__init__(f"activation of model {model_id} failed: {reason}")


ERRORS: dict[int, type[ApiError]] = {
    401: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: UnprocessableError,
    429: OverloadedError,
    503: UnavailableError,
}


def detail_text(detail: Any) -> str:
    """One line for a ``detail``: FastAPI's validation errors become ``body.k: message; ...``."""
    if isinstance(detail, list):  # [{"loc": [...], "msg": ...}, ...]
        parts = []
        for err in detail:
            if isinstance(err, Mapping):
                loc = ".".join(str(p) for p in err.get("loc", ()))
                parts.append(f"{loc}: {err.get('msg', err)}" if loc else str(err.get("msg", err)))
            else:
                parts.append(str(err))
        return "; ".join(parts)
    return str(detail)


def raise_for_status(response: httpx.Response) -> None:
    """Raise the ``ApiError`` subclass for the status (``ApiError`` itself for others) unless 2xx."""
    if response.is_success:
        return
    try:
        body = response.json()
        detail = body["detail"] if isinstance(body, dict) and "detail" in body else body
    except ValueError:
        detail = response.text
    cls = ERRORS.get(response.status_code, ApiError)
    raise cls(
        response.status_code,
        detail,
        method=response.request.method,
        url=response.request.url.path,
        headers=dict(response.headers),
    )
