"""How the client sends a route, written once for the sync and the async client.

Each route is a *flow*: a generator method that yields what it needs done (a ``Request`` to send, a
``Sleep`` between polls, an ``Emit`` of one value for iterators) and returns the answer::

    @route
    def search(self, item: ItemLike, *, k: int = 10) -> Flow[SearchResponse]:
        \"\"\"The k nearest indexed items.\"\"\"
        response = yield Request("POST", self._at("/search"), {"item": encode_item(item), "k": k})
        return parse(SearchResponse, response)

``SyncSender`` and ``AsyncSender`` each drive any flow: they send its requests (raising ``ApiError`` for
a non-2xx answer, thrown into the flow so that it may retry), sleep, and hand back what it returns. Only
these two small drivers differ by ``await``. It is httpx's own pattern for authentication
(``Auth.auth_flow`` is one generator that the sync and the async client both drive), applied to routes.

``route`` turns a flow into a method: ``client.search(x)`` returns a ``SearchResponse`` on a sync client
and a coroutine of one on an async client. Its ``__get__`` overloads tell type checkers so, with the
flow's own parameters (a ``ParamSpec``), so editors show the real signature, return type and docstring
(checked with mypy --strict and pyright). At run time each driver makes one plain function per route
(an ``async def`` for the async one) with that signature, so ``help()`` and ``inspect`` see ordinary
methods. On a routes class without a driver the attribute is the flow itself, which lets one flow call
another: ``page = yield from ItemRoutes.list_items(self, offset=n)``.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass, field
from types import MethodType
from typing import (
    TYPE_CHECKING,
    Any,
    Concatenate,
    Generic,
    ParamSpec,
    Self,
    TypeAlias,
    TypeVar,
    cast,
    overload,
)

import httpx

from service.client_encode import dumps
from service.client_errors import raise_for_status

P = ParamSpec("P")
T = TypeVar("T")
S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request of a flow; the flow receives the ``httpx.Response`` (2xx, else an ``ApiError``)."""

    method: str
    path: str
    json: Any = None  # sent as strict JSON (no NaN or Infinity)
    params: Mapping[str, Any] | None = None
    files: Mapping[str, Any] | None = field(default=None, kw_only=True)  # multipart parts (an upload)
    data: Mapping[str, str] | None = field(default=None, kw_only=True)  # the multipart form's fields
    content: bytes | None = field(default=None, kw_only=True)  # a raw body (a bulk import's .npz)

    def send_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {"params": self.params, "files": self.files, "data": self.data}
        if self.json is not None:
            args["content"] = dumps(self.json)
            args["headers"] = {"content-type": "application/json"}
        elif self.content is not None:
            args["content"] = self.content
            args["headers"] = {"content-type": "application/octet-stream"}
        return args


@dataclass(frozen=True, slots=True)
class Sleep:
    """Pause a flow (between polls) without blocking an event loop."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Emit(Generic[T]):
    """Hand one value to the caller of an iterator route."""

    value: T


Step: TypeAlias = Request | Sleep
Flow: TypeAlias = Generator[Step, Any, T]  # yields steps, receives their outcome, returns the answer
Stream: TypeAlias = Generator[Step | Emit[T], Any, None]  # the same, emitting values as it goes


def poll(
    fetch: Callable[[], Flow[T]],
    over: Callable[[T], bool],
    timeout: float,
    interval: float,
    what: Callable[[T], str],
) -> Flow[T]:
    """Run ``fetch`` every ``interval`` seconds until ``over`` holds; TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not over(value := (yield from fetch())):
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what(value)} after {timeout}s")
        yield Sleep(interval)
    return value


# -- routes ------------------------------------------------------------------------------------------
class _FlowMethod:
    """What both kinds of route share: the flow, and the one method made of it for each driver."""

    iterates = False

    def __init__(self, flow: Callable[..., Any]) -> None:
        self.flow = flow
        self.__name__ = flow.__name__
        self.__qualname__ = flow.__qualname__
        self.__doc__ = flow.__doc__
        self.__module__ = flow.__module__
        self._methods: dict[type[Any], Callable[..., Any]] = {}

    def _get(self, obj: Any, owner: type[Any] | None) -> Any:
        """On a client: its method. On a routes class (no driver): the flow, for other flows to call."""
        cls = owner if obj is None else type(obj)
        sender: Any = next((s for s in (SyncSender, AsyncSender) if cls and issubclass(cls, s)), None)
        if sender is None:
            return self
        method = self._methods.get(sender)
        if method is None:
            method = self._methods[sender] = sender._method(self)
        return method if obj is None else MethodType(method, obj)

    def _named(self, method: Callable[..., Any], shown: list[tuple[str, str]]) -> Callable[..., Any]:
        """``method`` with this route's name, docstring and signature, the answer's type as its return
        (``Flow[SearchResponse]`` shows as ``SearchResponse``), for ``help`` and ``inspect``."""
        for attr in ("__name__", "__qualname__", "__doc__", "__module__"):
            setattr(method, attr, getattr(self, attr))
        sig = inspect.signature(self.flow)
        answer = str(sig.return_annotation)
        for pattern, replacement in shown:
            answer = re.sub(pattern, replacement, answer)
        method.__signature__ = sig.replace(return_annotation=answer)  # type: ignore[attr-defined]
        return method


class route(_FlowMethod, Generic[S, P, T]):  # noqa: N801 - a decorator, like property
    """A flow as a method: returns ``T`` on a ``SyncSender``, a coroutine of ``T`` on an ``AsyncSender``."""

    def __init__(self, flow: Callable[Concatenate[S, P], Flow[T]]) -> None:
        super().__init__(flow)

    def __call__(self, obj: S, /, *args: P.args, **kwargs: P.kwargs) -> Flow[T]:
        """The flow itself, for another flow: ``yield from Routes.job(self, job_id)``."""
        return self.flow(obj, *args, **kwargs)  # type: ignore[no-any-return]

    if TYPE_CHECKING:

        @overload
        def __get__(self, obj: None, owner: type[SyncSender]) -> Callable[Concatenate[Any, P], T]: ...
        @overload
        def __get__(
            self, obj: None, owner: type[AsyncSender]
        ) -> Callable[Concatenate[Any, P], Coroutine[Any, Any, T]]: ...
        @overload
        def __get__(self, obj: None, owner: type[Any]) -> Self: ...
        @overload
        def __get__(self, obj: SyncSender, owner: type[Any]) -> Callable[P, T]: ...
        @overload
        def __get__(self, obj: AsyncSender, owner: type[Any]) -> Callable[P, Coroutine[Any, Any, T]]: ...
        def __get__(self, obj: Any, owner: type[Any]) -> Any: ...

    else:
        __get__ = _FlowMethod._get


class iterator_route(_FlowMethod, Generic[S, P, T]):  # noqa: N801
    """A flow that emits values, as a method: an ``Iterator[T]`` on a ``SyncSender``, an
    ``AsyncIterator[T]`` on an ``AsyncSender``."""

    iterates = True

    def __init__(self, flow: Callable[Concatenate[S, P], Stream[T]]) -> None:
        super().__init__(flow)

    def __call__(self, obj: S, /, *args: P.args, **kwargs: P.kwargs) -> Stream[T]:
        return self.flow(obj, *args, **kwargs)  # type: ignore[no-any-return]

    if TYPE_CHECKING:

        @overload
        def __get__(
            self, obj: None, owner: type[SyncSender]
        ) -> Callable[Concatenate[Any, P], Iterator[T]]: ...
        @overload
        def __get__(
            self, obj: None, owner: type[AsyncSender]
        ) -> Callable[Concatenate[Any, P], AsyncIterator[T]]: ...
        @overload
        def __get__(self, obj: None, owner: type[Any]) -> Self: ...
        @overload
        def __get__(self, obj: SyncSender, owner: type[Any]) -> Callable[P, Iterator[T]]: ...
        @overload
        def __get__(self, obj: AsyncSender, owner: type[Any]) -> Callable[P, AsyncIterator[T]]: ...
        def __get__(self, obj: Any, owner: type[Any]) -> Any: ...

    else:
        __get__ = _FlowMethod._get


# -- the two drivers ---------------------------------------------------------------------------------
class SyncSender:
    """Drives flows over an ``httpx.Client``: requests one after another, ``time.sleep`` between polls."""

    _http: httpx.Client

    @staticmethod
    def _method(route: _FlowMethod) -> Callable[..., Any]:
        flow = route.flow

        def call(self: SyncSender, /, *args: Any, **kwargs: Any) -> Any:
            return self._run(flow(self, *args, **kwargs))

        def each(self: SyncSender, /, *args: Any, **kwargs: Any) -> Iterator[Any]:
            return self._iterate(flow(self, *args, **kwargs))

        shown = [(r"^Flow\[(.*)\]$", r"\1"), (r"^Stream\[(.*)\]$", r"Iterator[\1]")]
        return route._named(each if route.iterates else call, shown)

    def _run(self, flow: Flow[T]) -> T:
        try:
            step = next(flow)
            while True:
                try:
                    outcome = self._do(step)
                except Exception as exc:  # noqa: BLE001 - the flow may handle it (wait_ready retries)
                    step = flow.throw(exc)
                else:
                    step = flow.send(outcome)
        except StopIteration as done:
            return cast(T, done.value)

    def _iterate(self, flow: Stream[T]) -> Iterator[T]:
        with closing(flow):
            try:
                step = next(flow)
                while True:
                    if isinstance(step, Emit):
                        yield step.value
                        step = next(flow)
                        continue
                    try:
                        outcome = self._do(step)
                    except Exception as exc:  # noqa: BLE001
                        step = flow.throw(exc)
                    else:
                        step = flow.send(outcome)
            except StopIteration:
                return

    def _do(self, step: Step) -> httpx.Response | None:
        if isinstance(step, Sleep):
            time.sleep(step.seconds)
            return None
        response = self._http.request(step.method, step.path, **step.send_args())
        raise_for_status(response)
        return response


class AsyncSender:
    """Drives flows over an ``httpx.AsyncClient``: the same as ``SyncSender``, awaited."""

    _http: httpx.AsyncClient

    @staticmethod
    def _method(route: _FlowMethod) -> Callable[..., Any]:
        flow = route.flow

        async def call(self: AsyncSender, /, *args: Any, **kwargs: Any) -> Any:
            return await self._run(flow(self, *args, **kwargs))

        def each(self: AsyncSender, /, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            return self._iterate(flow(self, *args, **kwargs))

        shown = [(r"^Flow\[(.*)\]$", r"\1"), (r"^Stream\[(.*)\]$", r"AsyncIterator[\1]")]
        return route._named(each if route.iterates else call, shown)

    async def _run(self, flow: Flow[T]) -> T:
        # The flow is resumed here, never inside a helper coroutine: a StopIteration leaving a coroutine
        # becomes a RuntimeError (PEP 479), so it must be caught in the frame that resumes the flow.
        try:
            step = next(flow)
            while True:
                try:
                    outcome = await self._do(step)
                except Exception as exc:  # noqa: BLE001
                    step = flow.throw(exc)
                else:
                    step = flow.send(outcome)
        except StopIteration as done:
            return cast(T, done.value)

    async def _iterate(self, flow: Stream[T]) -> AsyncIterator[T]:
        with closing(flow):
            try:
                step = next(flow)
                while True:
                    if isinstance(step, Emit):
                        yield step.value
                        step = next(flow)
                        continue
                    try:
                        outcome = await self._do(step)
                    except Exception as exc:  # noqa: BLE001
                        step = flow.throw(exc)
                    else:
                        step = flow.send(outcome)
            except StopIteration:
                return

    async def _do(self, step: Step) -> httpx.Response | None:
        if isinstance(step, Sleep):
            await asyncio.sleep(step.seconds)
            return None
        response = await self._http.request(step.method, step.path, **step.send_args())
        raise_for_status(response)
        return response
