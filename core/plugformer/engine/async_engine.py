"""The engine behind an asyncio server: one thread runs :meth:`Engine.step`, coroutines await their deltas.

:class:`AsyncEngine` owns the step loop. It runs ``engine.step()`` in one dedicated thread while any
request is in flight and sleeps on a condition otherwise (never spinning). After each step, that step's
:class:`StreamDelta` objects go to their requests' asyncio queues in one ``loop.call_soon_threadsafe`` per
event loop, so the event loop never blocks on a forward pass and wakes once per step::

    stream = await async_engine.generate(prompt, params, request_id)   # admission: may raise QueueFull
    async with contextlib.aclosing(stream):                             # leaving early aborts it
        async for delta in stream:
            ...
    stream.output                                                       # the final RequestOutput

:meth:`generate` admits the request before it returns, so a full queue (:class:`QueueFull`) or a
prompt that cannot fit (:class:`ConfigError`) is known before a server sends any response.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from plugformer.engine.engine import Engine, EngineStats
from plugformer.engine.outputs import RequestOutput, StreamDelta
from plugformer.engine.params import SamplingParams
from plugformer.errors import PlugformerError

_log = logging.getLogger(__name__)


class EngineStopped(PlugformerError):
    """The engine is shutting down (or its step loop failed): it takes no new requests."""


_DONE = object()  # end-of-stream marker put after a request's last delta


def _put_all(items: list[tuple[asyncio.Queue, object]]) -> None:
    """Runs on the event loop: hand each delta to its request's queue, in order."""
    for queue, item in items:
        queue.put_nowait(item)


@dataclass
class _Route:
    """Where one request's deltas go, and how many of its samples are still running."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue
    remaining: int
    stream: RequestStream


@dataclass
class RequestStream:
    """The deltas of one admitted request, as an async iterator. :attr:`output` is the request's final
    :class:`RequestOutput` once the stream ended (token counts and timings for usage and metrics).
    Closing it (``aclose``, or leaving ``async with contextlib.aclosing(stream)``) before the end aborts
    the request, which frees its KV-cache blocks at the next engine step."""

    request_id: str
    _owner: AsyncEngine
    _queue: asyncio.Queue
    output: RequestOutput | None = None
    _done: bool = field(default=False)
    _closed: bool = field(default=False)

    def __aiter__(self) -> AsyncIterator[StreamDelta]:
        return self

    async def __anext__(self) -> StreamDelta:
        if self._done or self._closed:
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is _DONE:
            self._done = True
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._done = True
            raise item
        return item

    @property
    def finished(self) -> bool:
        """True once the engine delivered the request's last delta."""
        return self._done

    async def aclose(self) -> None:
        """Stop reading; abort the request if it has not finished."""
        if not self._done and not self._closed:
            self._owner.abort(self.request_id)
        self._closed = True


class AsyncEngine:
    """Runs ``engine``'s step loop in one background thread and serves its requests to coroutines.
    ``on_finish(output)`` is called from that thread with each request's final :class:`RequestOutput`
    (finished or aborted): the place for metrics.

    ``add_request`` and ``abort`` of :class:`Engine` are thread-safe; ``step`` is only ever called from
    this object's thread. :meth:`shutdown` stops admitting, lets in-flight requests finish within a
    grace period, aborts the rest and stops the thread.
    """

    def __init__(self, engine: Engine, on_finish: Callable[[RequestOutput], None] | None = None):
        self.engine, self.on_finish = engine, on_finish
        self._cond = threading.Condition()
        self._routes: dict[str, _Route] = {}
        self._stopping = False
        self._stopped = False
        self.error: BaseException | None = None  # what made the step loop fail, if it did
        self.steps = 0
        self._stats = engine.stats()
        self._thread = threading.Thread(target=self._run, name="plugformer-engine", daemon=True)
        self._thread.start()

    # ---- the loop thread --------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._routes and not self._stopping:
                    self._cond.wait()
                if self._stopping and not self._routes:
                    self._stopped = True
                    self._cond.notify_all()
                    return
            try:
                deltas = self.engine.step()
            except BaseException as exc:  # the loop cannot go on: fail every request, take no more
                self._fail(exc)
                return
            self.steps += 1
            self._stats = self.engine.stats()
            self._deliver(deltas)

    def _deliver(self, deltas: list[StreamDelta]) -> None:
        finished: list[tuple[_Route, str]] = []
        # one wake-up of each event loop per step, not one per delta: a thread-safe call writes to the
        # loop's self-pipe and makes it switch threads, which adds up with many streams per step
        batches: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue, object]]] = {}
        with self._cond:
            for delta in deltas:
                route = self._routes.get(delta.request_id)
                if route is None:
                    continue
                batches.setdefault(route.loop, []).append((route.queue, delta))
                if delta.finish_reason is not None:
                    route.remaining -= 1
                    if route.remaining == 0:
                        finished.append((route, delta.request_id))
                        del self._routes[delta.request_id]
            if finished:
                self._cond.notify_all()
        for loop, items in batches.items():
            loop.call_soon_threadsafe(_put_all, items)
        for route, request_id in finished:
            output = self.engine.output(request_id)
            self.engine.release(request_id)
            route.stream.output = output
            if self.on_finish is not None:
                try:
                    self.on_finish(output)
                except Exception:  # a metrics hook must never stop the loop, but its failure is reported
                    _log.exception("the engine's on_finish hook failed for request %s", request_id)
            route.loop.call_soon_threadsafe(route.queue.put_nowait, _DONE)

    def _fail(self, exc: BaseException) -> None:
        error = EngineStopped(f"the engine's step loop failed: {type(exc).__name__}: {exc}")
        with self._cond:
            self.error, self._stopping, self._stopped = exc, True, True
            routes, self._routes = list(self._routes.values()), {}
            self._cond.notify_all()
        for route in routes:
            route.loop.call_soon_threadsafe(route.queue.put_nowait, error)

    # ---- what coroutines call ---------------------------------------------------------------------------

    @property
    def accepting(self) -> bool:
        """False once :meth:`shutdown` began or the step loop failed."""
        return not self._stopping

    def stats(self) -> EngineStats:
        """The engine's :class:`EngineStats` after its latest step (taken by the loop thread, so reading it
        never races a step)."""
        return self._stats

    @property
    def num_in_flight(self) -> int:
        """Requests admitted and not yet finished."""
        with self._cond:
            return len(self._routes)

    async def generate(self, prompt: str | Sequence[int], params: SamplingParams | None = None,
                       request_id: str | None = None) -> RequestStream:
        """Admit a request and return its :class:`RequestStream`. Raises :class:`QueueFull` (queue full),
        :class:`ConfigError` (the prompt cannot fit, ...) or :class:`EngineStopped` before anything runs.

        The admission (tokenizing, checks, queueing) runs in a worker thread, not on the event loop."""
        params = params or SamplingParams()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        stream = RequestStream("", self, queue)
        route = _Route(loop, queue, params.n, stream)
        admitted = loop.run_in_executor(None, self._admit, prompt, params, request_id, route)
        try:
            await asyncio.shield(admitted)
        except asyncio.CancelledError:  # the caller left while admission ran: do not leave it running
            admitted.add_done_callback(lambda f: f.cancelled() or f.exception() or self.abort(f.result()))
            raise
        return stream

    def _admit(self, prompt: str | Sequence[int], params: SamplingParams, request_id: str | None,
               route: _Route) -> str:
        with self._cond:
            if self._stopping:
                raise EngineStopped("the server is shutting down and takes no new requests")
        # the route must exist before the loop can step the request, so register it under the engine's id
        with self._cond:
            request_id = self.engine.add_request(prompt, params, request_id)
            route.stream.request_id = request_id
            self._routes[request_id] = route
            self._cond.notify_all()
        return request_id

    def abort(self, request_id: str) -> None:
        """Cancel a request (client gone, timed out): it finishes with ``abort`` at the next step, which
        frees its blocks. Unknown or finished ids are ignored."""
        with self._cond:
            if request_id not in self._routes:
                return
            self.engine.abort(request_id)
            self._cond.notify_all()

    def shutdown(self, grace_s: float = 0.0) -> None:
        """Stop admitting; wait up to ``grace_s`` seconds for in-flight requests to finish, abort the
        rest, and stop the loop thread. Blocking and thread-safe (from a coroutine:
        ``await asyncio.to_thread(async_engine.shutdown, grace_s)``)."""
        deadline = time.monotonic() + max(0.0, grace_s)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            while self._routes and time.monotonic() < deadline:
                self._cond.wait(timeout=deadline - time.monotonic())
            for request_id in list(self._routes):
                self.engine.abort(request_id)
            self._cond.notify_all()
        self._thread.join(timeout=max(5.0, grace_s))


__all__ = ["AsyncEngine", "EngineStopped", "RequestStream"]
