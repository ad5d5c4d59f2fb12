"""Retrieval-augmented chat: a chat completion answered from the passages retrieved for its last user message.

The last user message's text is the question. The index's ``k`` best passages for it are written with the core's
prompt format (:func:`plugformer.retrieval.rag_prompt`, the server's ``rag.template``) into that message, the
conversation is rendered with the checkpoint's chat template, and lower-ranked passages are dropped while it
would not fit the context with the answer's ``max_tokens`` (:func:`plugformer.retrieval.rag.fitted_prompt`, as
``plugformer rag`` does). So a model fine-tuned on ``rag_prompt`` records sees what it was trained on, and with
the plain template one user message becomes exactly ``plugformer rag``'s prompt.

A request opts out with ``"rag": false`` or asks for another number of passages with ``"rag_k"``; the passages
used come back under the response's ``plugformer.passages`` (the first chunk when streaming).
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from plugformer import PlugformerError
from plugformer.retrieval import fitted_prompt
from plugformer_serve.chat import render_chat
from plugformer_serve.protocol import _int, bad

if TYPE_CHECKING:
    from plugformer.interfaces import Tokenizer
    from plugformer.retrieval import SearchResult
    from plugformer_serve.metrics import ServerMetrics
    from plugformer_serve.served_retrieval import ServedRetrieval
    from plugformer_serve.workers import BoundedWorkers

#: the most passages one request may ask for (``rag_k``)
MAX_RAG_K = 100
#: the answer length passages are fitted around when the request sets no ``max_tokens`` (``plugformer rag``'s default)
DEFAULT_ANSWER_TOKENS = 64


def requested_k(body: Mapping[str, Any], served_k: int | None) -> int | None:
    """How many passages to retrieve for this request (None: answer without retrieval). ``served_k`` is the
    server's ``rag.k`` (None: the server has no index, so asking for retrieval is a 400 naming the field)."""
    use = body.get("rag")
    if use is not None and not isinstance(use, bool):
        raise bad(f"'rag' must be true or false, got {use!r}", "rag", "invalid_type")
    k = _int(body, "rag_k", 1, MAX_RAG_K)
    if served_k is None:
        if use or k is not None:
            raise bad("this server has no knowledge base to retrieve from (start it with rag.index=DIR)",
                      "rag" if use else "rag_k", "rag_unavailable")
        return None
    if use is False:
        return None
    return k if k is not None else served_k


def last_user_message(messages: Sequence[Mapping[str, str]]) -> int:
    """The position of the last ``user`` message (the question), or a 400 naming ``messages``."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i]["role"] == "user":
            return i
    raise bad("retrieval-augmented chat needs a user message to retrieve for (or set \"rag\": false)", "messages")


class _RenderedConversation:
    """What :func:`fitted_prompt` measures a prompt with, for a chat: the whole conversation rendered with the
    prompt as the question's message (its tokens) and the model's context."""

    def __init__(self, messages: Sequence[Mapping[str, str]], at: int, template: Any, tokenizer: Tokenizer,
                 context: int):
        self.messages, self.at, self.template, self.tokenizer, self.context = messages, at, template, tokenizer, context

    def encode(self, prompt: str) -> list[int]:
        messages = [dict(m) for m in self.messages]
        messages[self.at] = {"role": "user", "content": prompt}
        return render_chat(messages, self.template, self.tokenizer)


def passages_field(passages: Sequence[SearchResult]) -> list[dict[str, Any]]:
    """The passages as the response reports them, in prompt order (``[1]`` first): chunk id, score, source."""
    return [{"id": p.chunk.id, "score": float(p.score), "source": p.chunk.metadata.get("source")} for p in passages]


@dataclass
class RagChat:
    """The index a server retrieves from, with its settings, and the workers retrieval runs on."""

    served: ServedRetrieval
    workers: BoundedWorkers
    metrics: ServerMetrics

    def _search(self, question: str, k: int) -> list[SearchResult]:
        return self.served.index.search([question], k, **self.served.search_options)[0]  # type: ignore[union-attr]

    async def prompt(self, body: Mapping[str, Any], messages: list[dict[str, str]], k: int, *, template: Any,
                     tokenizer: Tokenizer, context: int, timeout: float) -> tuple[list[int], list[SearchResult]]:
        """The prompt's token ids and the passages it holds, best first (retrieval on a worker, rendering on a
        thread: never on the event loop)."""
        at = last_user_message(messages)
        start = time.monotonic()
        try:
            results = await self.workers.run(self._search, messages[at]["content"], k, timeout=timeout,
                                             what="retrieval")
        except PlugformerError as exc:  # e.g. the question has no tokens for the embedder
            raise bad(f"retrieval for messages[{at}] failed: {exc}", f"messages[{at}].content") from None
        self.metrics.retrieval_latency.observe(time.monotonic() - start)
        answer_tokens = _answer_tokens(body)
        conversation = _RenderedConversation(messages, at, template, tokenizer, context)

        def build() -> tuple[list[int], list[SearchResult]]:
            prompt, kept = fitted_prompt(conversation, messages[at]["content"], results,  # type: ignore[arg-type]
                                         answer_tokens, self.served.template)
            return conversation.encode(prompt), kept

        return await asyncio.to_thread(build)


def _answer_tokens(body: Mapping[str, Any]) -> int:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
    return DEFAULT_ANSWER_TOKENS


__all__ = ["DEFAULT_ANSWER_TOKENS", "MAX_RAG_K", "RagChat", "last_user_message", "passages_field", "requested_k"]
