"""Pure ASGI middleware: API-key check and request-body limit (no BaseHTTPMiddleware overhead)."""

from __future__ import annotations

import hmac

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import ErrorCode, ServiceError
from service.responses import OrjsonResponse

PUBLIC_PATHS = frozenset({"/health", "/ready"})


class ApiKeyMiddleware:
    """Every path but /health and /ready needs ``Authorization: Bearer <key>`` (401 otherwise).

    A middleware rather than a dependency, so no route (docs and openapi.json included) can be missed.
    """

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self._key = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        response = OrjsonResponse(
            {"detail": "missing or invalid API key: send 'Authorization: Bearer <key>'"},
            status_code=ErrorCode.UNAUTHORIZED.status,
            headers={"WWW-Authenticate": 'Bearer realm="embedding-service"'},
        )
        await response(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        scheme, _, token = Headers(scope=scope).get("authorization", "").partition(" ")
        # compare_digest: the time taken must not reveal how much of the key matched
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self._key)


def _too_large(limit: int) -> ServiceError:
    return ServiceError(
        ErrorCode.TOO_LARGE, f"request body exceeds the limit of {limit} bytes (--max-body-bytes)"
    )


class BodyLimitMiddleware:
    """Refuse bodies over ``max_bytes``: by Content-Length up front, and by counting streamed chunks.

    The error raised from ``receive`` is a ``ServiceError`` (an HTTPException), which FastAPI lets
    through body parsing to the exception handler; anything that escapes is answered here.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(scope, receive, send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _too_large(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except ServiceError as exc:
            if started or exc.code is not ErrorCode.TOO_LARGE:
                raise
            await self._reject(scope, receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        err = _too_large(self.max_bytes)
        response = OrjsonResponse(
            {"detail": err.detail}, status_code=err.status_code, headers={"Connection": "close"}
        )
        await response(scope, receive, send)
