"""Worker threads for the blocking work a request needs besides generation: embedding texts and retrieving passages.

The event loop never runs a model: ``/v1/embeddings`` and the retrieval of retrieval-augmented chat hand their
work to :class:`BoundedWorkers`, a few threads of their own (the engine's step thread is separate). The work
allowed in at once (running or waiting for a thread) is bounded; one more request is answered 429 with
``Retry-After`` at once, before any response starts, like a full engine queue.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any, TypeVar

from plugformer_serve.protocol import APIError

T = TypeVar("T")


class BoundedWorkers:
    """``threads`` worker threads and at most ``max_waiting`` jobs in flight (running or queued).

    A job counts until its thread finishes it, even when the request that asked for it has gone (a thread
    cannot be interrupted), so a burst of abandoned requests cannot pile up work behind the bound.
    """

    def __init__(self, threads: int, max_waiting: int, name: str = "plugformer-embed"):
        self.threads, self.max_waiting = threads, max_waiting
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)
        self.in_flight = 0  # touched only on the event loop's thread

    async def run(self, function: Callable[..., T], *args: Any, timeout: float | None = None,
                  what: str = "embedding") -> T:
        """``function(*args)`` on a worker thread; 429 when ``max_waiting`` jobs are already in flight, 408 when
        it does not finish within ``timeout`` seconds (the job still runs to its end on its thread)."""
        if self.in_flight >= self.max_waiting:
            raise APIError(429, f"the server is at capacity ({self.in_flight} {what} jobs in flight, the limit is "
                           f"server.embedding_max_waiting={self.max_waiting}); retry later", None, "queue_full",
                           headers={"retry-after": "1"})
        loop = asyncio.get_running_loop()
        self.in_flight += 1
        job = self._pool.submit(function, *args)
        job.add_done_callback(lambda _: self._finished_from(loop))
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(job)), timeout)
        except asyncio.TimeoutError:
            raise APIError(408, f"the {what} did not finish within server.timeout_s={timeout:g} s", None,
                           "timeout") from None

    def _finished_from(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            loop.call_soon_threadsafe(self._finished)
        except RuntimeError:  # the loop has closed: nobody counts any more
            pass

    def _finished(self) -> None:
        self.in_flight -= 1

    def shutdown(self) -> None:
        """Stop taking jobs; threads finish what they hold."""
        self._pool.shutdown(wait=False, cancel_futures=True)


__all__ = ["BoundedWorkers"]
