"""The ``openai`` server's settings (the ``server.*`` keys of ``plugformer serve``), checked on construction."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from plugformer import ConfigError
from plugformer.config import bounded


@dataclass
class OpenAIServerConfig:
    """Where to listen, who may call, and how long a request may take.

    - ``host``/``port``: the address (loopback by default; ``0.0.0.0`` to listen on every interface;
      port 0 picks a free one, reported when ready);
    - ``api_key``: one key or a list of keys; requests to ``/v1/*`` need ``Authorization: Bearer <key>``
      (None: no authentication);
    - ``timeout_s``: a request waiting or running longer is cancelled and answered with an error;
    - ``max_body_bytes``: larger request bodies get 413;
    - ``model_name``: the name the base model is served under (``model`` in requests);
    - ``grace_s``: on SIGTERM, how long in-flight requests may still finish before they are cancelled;
    - ``embedding_model``: the name ``/v1/embeddings`` and ``/v1/models`` serve the embedder under (None: the
      embedder's registered name);
    - ``embedding_max_inputs``: texts one ``/v1/embeddings`` request may hold (OpenAI's limit: 2048);
    - ``embedding_max_chars``: characters one text may hold (longer: 413);
    - ``embedding_workers``: threads that embed and retrieve (beside the engine's thread);
    - ``embedding_max_waiting``: embedding or retrieval requests running or waiting for a worker; one more is
      answered 429.
    """

    host: str = "127.0.0.1"
    port: int = bounded(8000, ge=0, le=65535)
    api_key: Any = None
    timeout_s: float = bounded(600.0, gt=0)
    max_body_bytes: int = bounded(1_000_000, ge=1)
    model_name: str = "default"
    grace_s: float = bounded(30.0, ge=0)
    embedding_model: Optional[str] = None
    embedding_max_inputs: int = bounded(2048, ge=1)
    embedding_max_chars: int = bounded(32768, ge=1)
    embedding_workers: int = bounded(1, ge=1, le=64)
    embedding_max_waiting: int = bounded(64, ge=1)

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host:
            raise ConfigError(f"server.host={self.host!r} must be a host name or IP address")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ConfigError(f"server.port={self.port!r} must be an integer in 0..65535")
        for name in ("timeout_s", "grace_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or (
                    name == "timeout_s" and value == 0):
                rule = "> 0" if name == "timeout_s" else ">= 0"
                raise ConfigError(f"server.{name}={value!r} must be a number of seconds {rule}")
        if isinstance(self.max_body_bytes, bool) or not isinstance(self.max_body_bytes, int) or \
                self.max_body_bytes < 1:
            raise ConfigError(f"server.max_body_bytes={self.max_body_bytes!r} must be an integer >= 1")
        if not isinstance(self.model_name, str) or not self.model_name.strip():
            raise ConfigError(f"server.model_name={self.model_name!r} must be a non-empty name")
        if self.embedding_model is not None and (not isinstance(self.embedding_model, str)
                                                 or not self.embedding_model.strip()):
            raise ConfigError(f"server.embedding_model={self.embedding_model!r} must be a non-empty name")
        for name, high in (("embedding_max_inputs", None), ("embedding_max_chars", None),
                           ("embedding_workers", 64), ("embedding_max_waiting", None)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (high and value > high):
                rule = f"in 1..{high}" if high else ">= 1"
                raise ConfigError(f"server.{name}={value!r} must be an integer {rule}")
        self.keys()

    def keys(self) -> list[str]:
        """The accepted API keys (empty: no authentication)."""
        value = self.api_key
        if value is None:
            return []
        keys = [value] if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else None
        if keys is None or not keys or any(not isinstance(k, str) or not k.strip() for k in keys):
            raise ConfigError(f"server.api_key must be a non-empty key or a list of them, got {value!r}")
        return keys


__all__ = ["OpenAIServerConfig"]
