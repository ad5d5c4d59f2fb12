"""Servers: expose the inference engine over a protocol (HTTP, gRPC, ...)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any


class Server(ABC):
    """Construction: ``Cls(config)`` (the entry's schema instance). :meth:`serve` blocks until shut down.

    A server gets a loaded :class:`plugformer.engine.Engine` (continuous batching over many requests),
    not a single-sequence generator. It should drive the engine through
    :class:`plugformer.engine.async_engine.AsyncEngine` (or its own single thread calling ``engine.step()``),
    answer a full queue (:class:`plugformer.engine.QueueFull`) with its protocol's "retry later", abort
    requests whose client left, and on SIGTERM stop accepting, let in-flight requests finish within a
    grace period and return.
    """

    def __init__(self, config: Any):
        self.config = config

    @abstractmethod
    def serve(self, engine: Any, *, chat_template: Any = None, adapters: Sequence[str] = (),
              ready: Callable[[str], None] | None = None) -> None:
        """Serve ``engine`` until shut down.

        ``chat_template``: the :class:`plugformer.training.ChatTemplate` chat requests are rendered with
        (None: the plain template); ``adapters``: names of LoRA adapters loaded into the engine
        (``SamplingParams.adapter``); ``ready(address)`` is called once requests are accepted.
        """
