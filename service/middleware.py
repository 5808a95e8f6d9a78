"""Pure ASGI middleware: API-key check and request-body limit (no BaseHTTPMiddleware overhead)."""

from __future__ import annotations

import hmac

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import ErrorCode, ServiceError
from service.responses import OrjsonResponse

PUBLIC_PATHS = frozenset({"/health", "/ready", "/"})  # "/": the console's page (service/console)
# The console's static files; every API call it makes carries the key. Only service/console serves here.
PUBLIC_PREFIXES = ("/console/",)


def _public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


class ApiKeyMiddleware:
    """Every path but /health, /ready and the console's files needs ``Authorization: Bearer <key>``.

    A middleware rather than a dependency, so no route (docs and openapi.json included) can be missed.
    """

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self._key = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _public(scope["path"]) or self._authorized(scope):
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


def _too_large(limit: int, flag: str = "--max-body-bytes") -> ServiceError:
    return ServiceError(ErrorCode.TOO_LARGE, f"request body exceeds the limit of {limit} bytes ({flag})")


class BodyLimitMiddleware:
    """Refuse bodies over ``max_bytes``: by Content-Length up front, and by counting streamed chunks.

    The error raised from ``receive`` is a ``ServiceError`` (an HTTPException), which FastAPI lets
    through body parsing to the exception handler; anything that escapes is answered here.
    """

    def __init__(
        self, app: ASGIApp, max_bytes: int, overrides: dict[str, tuple[int, str]] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        # path or path ending -> (limit, flag): uploads and imports get their own, larger limit
        self.overrides = overrides or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, flag = self._limit(scope["path"])
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._reject(scope, receive, send, _too_large(limit, flag))
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _too_large(limit, flag)
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
            await self._reject(scope, receive, send, exc)

    def _limit(self, path: str) -> tuple[int, str]:
        for ending, limit in self.overrides.items():
            if path == ending or (ending.startswith("*") and path.endswith(ending[1:])):
                return limit
        return self.max_bytes, "--max-body-bytes"

    async def _reject(self, scope: Scope, receive: Receive, send: Send, err: ServiceError) -> None:
        response = OrjsonResponse(
            {"detail": err.detail}, status_code=err.status_code, headers={"Connection": "close"}
        )
        await response(scope, receive, send)
