"""Servers: expose a loaded model over a protocol (HTTP, ...)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


class Server(ABC):
    """Construction: ``Cls(config)``. :meth:`serve` blocks until shut down.

    ``generator`` is a :class:`plugformer.generation.Generator` holding the model and tokenizer;
    call ``generator.complete(prompt, **sampling)`` per request.
    """

    def __init__(self, config: Any):
        self.config = config

    @abstractmethod
    def serve(self, generator: Any) -> None:
        """Serve requests with ``generator`` until interrupted."""
