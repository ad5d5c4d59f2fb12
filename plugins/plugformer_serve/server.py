"""The ``openai`` server: the FastAPI app of :mod:`plugformer_serve.app` under uvicorn, with a graceful SIGTERM.

SIGTERM (or Ctrl-C) does not stop uvicorn at once: the server first answers new ``/v1`` requests with
503 (``/ready`` turns 503 too, so a load balancer stops sending), lets in-flight requests finish within
``grace_s``, cancels the rest, and only then lets uvicorn close its sockets; the process exits 0.
A second signal stops at once.
"""
from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

import uvicorn

from plugformer import PlugformerError
from plugformer.interfaces import Server
from plugformer_serve.app import create_app
from plugformer_serve.schemas import OpenAIServerConfig
from plugformer_serve.served_retrieval import ServedRetrieval


class _Uvicorn(uvicorn.Server):
    """uvicorn that drains the engine on the first signal instead of closing connections."""

    def __init__(self, config: uvicorn.Config, on_signal: Callable[[], None]):
        super().__init__(config)
        self._on_signal, self._signalled = on_signal, False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._signalled:  # the second signal: stop now
            self.should_exit, self.force_exit = True, True
            return
        self._signalled = True
        self._on_signal()


def _access_logging() -> None:
    logger = logging.getLogger("plugformer.serve.access")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


class OpenAIServer(Server):
    """OpenAI-compatible HTTP: ``/v1/completions``, ``/v1/chat/completions``, ``/v1/models``, ``/health``,
    ``/ready``, ``/metrics``; with ``retrieval`` also ``/v1/embeddings`` and retrieval-augmented chat (see
    docs/serving.md)."""

    config: OpenAIServerConfig

    def __init__(self, config: OpenAIServerConfig | None = None):
        super().__init__(config or OpenAIServerConfig())

    def app(self, engine: Any, *, chat_template: Any = None, adapters: Sequence[str] = (),
            retrieval: ServedRetrieval | None = None) -> Any:
        """The ASGI application alone (to mount in another server or test in-process)."""
        return create_app(engine, self.config, chat_template=chat_template, adapters=adapters, retrieval=retrieval)

    def serve(self, engine: Any, *, chat_template: Any = None, adapters: Sequence[str] = (),
              ready: Callable[[str], None] | None = None, retrieval: ServedRetrieval | None = None) -> None:
        """Serve until SIGTERM; ``retrieval`` (:func:`~plugformer_serve.served_retrieval.load_served_retrieval`)
        adds ``/v1/embeddings`` and retrieval-augmented chat."""
        _access_logging()
        app = self.app(engine, chat_template=chat_template, adapters=adapters, retrieval=retrieval)
        state = app.state.serve
        config = uvicorn.Config(app, host=self.config.host, port=self.config.port, log_level="warning",
                                access_log=False, lifespan="on", timeout_graceful_shutdown=5,
                                timeout_keep_alive=5)
        loop: list[asyncio.AbstractEventLoop] = []

        def begin_drain() -> None:
            state.draining = True
            if loop:
                loop[0].call_soon_threadsafe(lambda: loop[0].create_task(drain()))
            else:
                server.should_exit = True

        async def drain() -> None:
            await asyncio.to_thread(state.engine.shutdown, self.config.grace_s)
            deadline = time.monotonic() + 5
            while state.in_flight > 0 and time.monotonic() < deadline:  # let the last answers go out
                await asyncio.sleep(0.05)
            server.should_exit = True

        async def announce() -> None:
            loop.append(asyncio.get_running_loop())
            while not server.started:
                if server.should_exit:
                    return
                await asyncio.sleep(0.02)
            host, port = self.config.host, self.config.port
            for s in server.servers:
                for sock in s.sockets:
                    host, port = sock.getsockname()[:2]
                    break
            if ready is not None:
                ready(f"http://{host}:{port}")

        server = _Uvicorn(config, begin_drain)

        async def main() -> None:
            watcher = asyncio.ensure_future(announce())
            try:
                await server.serve()
            finally:
                watcher.cancel()

        try:
            asyncio.run(main())
        except SystemExit:  # uvicorn exits 1 when it cannot bind
            pass
        if not server.started:
            raise PlugformerError(f"the server could not listen on {self.config.host}:{self.config.port} "
                                  "(address in use or not available)")


__all__ = ["OpenAIServer"]
