"""``POST /v1/embeddings``: OpenAI's embeddings API over an ``embedder`` plugin.

One owner for that endpoint: which request fields exist and how each is checked (a 400 naming the field, 413
for an over-long text), how vectors are written (``float`` lists or ``base64``: little-endian float32 bytes, as
OpenAI writes them and its Python client asks for by default), and how usage is counted (the embedder's own
tokenizer when it has a plugformer one, e.g. ``pooled``; else whitespace-separated words). Embedding runs on
:class:`~plugformer_serve.workers.BoundedWorkers`, never on the event loop.
"""
from __future__ import annotations

import base64
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from plugformer import ConfigError, PlugformerError
from plugformer.interfaces import ROLES
from plugformer_serve.protocol import APIError, _int, _token_ids, _type_name, bad, model_of

if TYPE_CHECKING:
    import numpy as np

    from plugformer.interfaces import Embedder
    from plugformer_serve.metrics import ServerMetrics
    from plugformer_serve.schemas import OpenAIServerConfig
    from plugformer_serve.workers import BoundedWorkers

ENCODING_FORMATS = ("float", "base64")


@dataclass(frozen=True)
class EmbeddingRequest:
    """A checked ``/v1/embeddings`` body: the texts, in order, and how to answer them."""

    model: str
    texts: list[str]
    encoding_format: str = "float"
    dimensions: int | None = None
    #: plugformer extension (as NVIDIA NIM's ``input_type``): embed the texts as ``query`` or ``passage``
    input_type: str = "passage"


def embedding_request(body: Mapping[str, Any], *, default_model: str, max_inputs: int,
                      max_chars: int) -> EmbeddingRequest:
    """The request ``body`` checked: ``input`` a non-empty string or list of them (token arrays are refused:
    this server's embedders read text), at most ``max_inputs`` texts of at most ``max_chars`` characters."""
    value = body.get("input")
    if isinstance(value, str):
        texts = [value]
    elif isinstance(value, list) and value and all(isinstance(t, str) for t in value):
        texts = list(value)
    elif _token_ids(value) or (isinstance(value, list) and value and all(_token_ids(t) for t in value)):
        raise bad("'input' as token ids is not supported: this server's embedders tokenize text themselves; send "
                  "the text", "input", "unsupported_input")
    else:
        raise bad(f"'input' must be a non-empty string or a non-empty list of strings, got {_type_name(value)}"
                  f"{' (empty)' if value in ('', []) else ''}", "input", "invalid_type")
    if len(texts) > max_inputs:
        raise bad(f"'input' holds {len(texts)} texts; the limit is {max_inputs} per request "
                  "(server.embedding_max_inputs)", "input", "too_many_inputs")
    for i, text in enumerate(texts):
        if not text:
            raise bad(f"'input[{i}]' is an empty string", "input", "empty_input")
        if len(text) > max_chars:
            raise APIError(413, f"'input[{i}]' has {len(text)} characters; the limit is {max_chars} "
                           "(server.embedding_max_chars)", "input", "input_too_long")
    encoding = body.get("encoding_format")
    encoding = "float" if encoding is None else encoding
    if encoding not in ENCODING_FORMATS:
        raise bad(f"'encoding_format' must be one of {', '.join(ENCODING_FORMATS)}, got {encoding!r}",
                  "encoding_format")
    role = body.get("input_type")
    role = "passage" if role is None else role
    if role not in ROLES:
        raise bad(f"'input_type' must be one of {', '.join(ROLES)}, got {role!r}", "input_type")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise bad(f"'user' must be a string, got {_type_name(user)}", "user", "invalid_type")
    return EmbeddingRequest(model_of(body, default_model), texts, encoding, _int(body, "dimensions", 1), role)


def embedding_model_name(configured: str | None, embedder_name: str | None, taken: Sequence[str]) -> str:
    """The name the embedder is served under: ``server.embedding_model``, else the embedder's registered name. It
    must differ from the generation models' names (``taken``: the base model and the adapters), so ``model``
    says which API a name belongs to; else one line."""
    name = configured or embedder_name or "embedder"
    if name in taken:
        how = "choose another" if configured else "name it"
        raise ConfigError(f"plugformer serve: the embedding model would be served as {name!r}, which already names a "
                          f"generation model ({', '.join(taken)}); {how} with server.embedding_model=NAME")
    return name


def encode_vector(row: np.ndarray, encoding_format: str) -> list[float] | str:
    """One vector as OpenAI writes it: a list of floats, or base64 of its little-endian float32 bytes."""
    import numpy as np

    if encoding_format == "base64":
        return base64.b64encode(np.asarray(row, dtype="<f4").tobytes()).decode("ascii")
    return np.asarray(row, dtype=np.float32).tolist()


def count_tokens(embedder: Embedder, texts: Sequence[str]) -> int:
    """``usage.prompt_tokens``: tokens of the embedder's plugformer tokenizer when it has one (its ``tokenizer``
    attribute, as ``pooled``), else whitespace-separated words."""
    from plugformer.interfaces import Tokenizer

    tokenizer = getattr(embedder, "tokenizer", None)
    if isinstance(tokenizer, Tokenizer):
        return sum(len(ids) for ids in tokenizer.encode_batch(list(texts)))
    return sum(len(text.split()) for text in texts)


def embedding_response(request: EmbeddingRequest, vectors: np.ndarray, tokens: int) -> dict[str, Any]:
    """The response body: ``{"object": "list", "data": [...], "model", "usage"}``."""
    data = [{"object": "embedding", "index": i, "embedding": encode_vector(row, request.encoding_format)}
            for i, row in enumerate(vectors)]
    return {"object": "list", "data": data, "model": request.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


class EmbeddingService:
    """The embedder a server answers ``/v1/embeddings`` with, under the name ``model`` (listed in ``/v1/models``)."""

    def __init__(self, embedder: Embedder, model: str, config: OpenAIServerConfig, workers: BoundedWorkers,
                 metrics: ServerMetrics):
        self.embedder, self.model, self.config, self.workers, self.metrics = embedder, model, config, workers, metrics

    def _embed(self, request: EmbeddingRequest) -> tuple[np.ndarray, int]:
        vectors = self.embedder.embed_all(request.texts, role=request.input_type)  # type: ignore[arg-type]
        return vectors, count_tokens(self.embedder, request.texts)

    async def answer(self, body: Mapping[str, Any], timeout: float, info: dict[str, Any]) -> dict[str, Any]:
        """The response to ``body``, or an :class:`APIError` naming the field (429 when the workers are full)."""
        start = time.monotonic()
        request = embedding_request(body, default_model=self.model, max_inputs=self.config.embedding_max_inputs,
                                    max_chars=self.config.embedding_max_chars)
        info["model"] = request.model
        if request.model != self.model:
            raise APIError(404, f"embedding model {request.model!r} does not exist; embedding models: {self.model}",
                           "model", "model_not_found")
        if request.dimensions is not None and request.dimensions != self.embedder.dim:
            raise bad(f"'dimensions' is {request.dimensions}, but {self.model!r} embeds into {self.embedder.dim} "
                      "dimensions and does not shorten its vectors; omit 'dimensions' or set it to "
                      f"{self.embedder.dim}", "dimensions")
        try:
            vectors, tokens = await self.workers.run(self._embed, request, timeout=timeout, what="embedding")
        except PlugformerError as exc:  # the embedder refused a text (e.g. one with no tokens)
            raise bad(f"'input' cannot be embedded: {exc}", "input") from None
        info["prompt_tokens"] = tokens
        self.metrics.embedding_requests.inc()
        self.metrics.embedding_inputs.inc(len(request.texts))
        self.metrics.embedding_latency.observe(time.monotonic() - start)
        return embedding_response(request, vectors, tokens)


__all__ = ["ENCODING_FORMATS", "EmbeddingRequest", "EmbeddingService", "count_tokens", "embedding_model_name",
           "embedding_request", "embedding_response", "encode_vector"]
