"""OpenAI response bodies and stream chunks from engine outputs: one owner for the response side of the API."""
from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from plugformer.engine import Logprob, RequestOutput, StreamDelta


def usage(outputs: Sequence[RequestOutput]) -> dict[str, int]:
    """Token counts of a response: every prompt once, every generated token."""
    prompt = sum(len(o.prompt_token_ids) for o in outputs)
    completion = sum(len(c.token_ids) for o in outputs for c in o.outputs)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _alternatives(entry: dict[int, Logprob], k: int) -> list[Logprob]:
    return sorted((lp for lp in entry.values() if lp.rank <= k), key=lambda lp: lp.rank)[:k]


def completion_logprobs(token_ids: Sequence[int], entries: Sequence[dict[int, Logprob]] | None, k: int,
                        offset: int = 0) -> dict[str, Any] | None:
    """``/v1/completions`` logprobs: ``tokens``, ``token_logprobs``, ``top_logprobs``, ``text_offset``."""
    if entries is None:
        return None
    tokens, values, tops, offsets = [], [], [], []
    for token, entry in zip(token_ids, entries):
        chosen = entry[token]
        tokens.append(chosen.decoded_token)
        values.append(chosen.logprob)
        tops.append({lp.decoded_token: lp.logprob for lp in _alternatives(entry, k)})
        offsets.append(offset)
        offset += len(chosen.decoded_token)
    return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}


def _chat_token(lp: Logprob) -> dict[str, Any]:
    return {"token": lp.decoded_token, "logprob": lp.logprob, "bytes": list(lp.decoded_token.encode("utf-8"))}


def chat_logprobs(token_ids: Sequence[int], entries: Sequence[dict[int, Logprob]] | None,
                  k: int) -> dict[str, Any] | None:
    """``/v1/chat/completions`` logprobs: ``{"content": [{token, logprob, bytes, top_logprobs}]}``."""
    if entries is None:
        return None
    return {"content": [{**_chat_token(entry[token]), "top_logprobs": [_chat_token(lp) for lp in
                                                                        _alternatives(entry, k)]}
                        for token, entry in zip(token_ids, entries)]}


class ResponseWriter:
    """Builds one response's bodies: ``kind`` is ``completion`` or ``chat``; choice ``index`` of prompt
    ``p`` with ``n`` samples is ``p * n + sample``."""

    def __init__(self, kind: str, response_id: str, model: str, n: int, logprobs: int | None):
        self.kind, self.id, self.model, self.n, self.k = kind, response_id, model, n, logprobs
        self.created = int(time.time())
        self._offsets: dict[int, int] = {}

    def _head(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def full(self, outputs: Sequence[RequestOutput]) -> dict[str, Any]:
        """The non-streaming response for every prompt's finished output."""
        choices = []
        for p, out in enumerate(outputs):
            for c in out.outputs:
                index = p * self.n + c.index
                if self.kind == "chat":
                    choices.append({"index": index, "message": {"role": "assistant", "content": c.text},
                                    "logprobs": chat_logprobs(c.token_ids, c.logprobs, self.k or 0)
                                    if self.k is not None else None,
                                    "finish_reason": c.finish_reason})
                else:
                    choices.append({"index": index, "text": c.text,
                                    "logprobs": completion_logprobs(c.token_ids, c.logprobs, self.k or 0)
                                    if self.k is not None else None,
                                    "finish_reason": c.finish_reason})
        head = self._head("chat.completion" if self.kind == "chat" else "text_completion")
        return {**head, "choices": choices, "usage": usage(outputs), "system_fingerprint": None}

    def chunk(self, prompt_index: int, delta: StreamDelta | None = None, *, role: bool = False,
              index: int | None = None, include_usage: bool = False) -> dict[str, Any]:
        """One stream chunk: ``delta``'s text (and logprobs, finish reason), or (chat) the opening role."""
        index = prompt_index * self.n + (delta.index if delta is not None else 0) if index is None else index
        finish = delta.finish_reason if delta is not None else None
        if self.kind == "chat":
            if role:
                message: dict[str, Any] = {"role": "assistant", "content": ""}
            else:
                message = {"content": delta.text_delta} if delta is not None and delta.text_delta else {}
            lp = (chat_logprobs(delta.token_ids, delta.logprobs, self.k or 0)
                  if delta is not None and self.k is not None else None)
            choice = {"index": index, "delta": message, "logprobs": lp, "finish_reason": finish}
            obj = "chat.completion.chunk"
        else:
            offset = self._offsets.get(index, 0)
            lp = (completion_logprobs(delta.token_ids, delta.logprobs, self.k or 0, offset)
                  if delta is not None and self.k is not None else None)
            if delta is not None:
                self._offsets[index] = offset + len(delta.text_delta)
            choice = {"index": index, "text": delta.text_delta if delta is not None else "", "logprobs": lp,
                      "finish_reason": finish}
            obj = "text_completion"
        body = {**self._head(obj), "choices": [choice], "system_fingerprint": None}
        if include_usage:
            body["usage"] = None
        return body

    def usage_chunk(self, outputs: Sequence[RequestOutput]) -> dict[str, Any]:
        """The last chunk when ``stream_options.include_usage``: no choices, the usage."""
        obj = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        return {**self._head(obj), "choices": [], "usage": usage(outputs), "system_fingerprint": None}


__all__ = ["ResponseWriter", "chat_logprobs", "completion_logprobs", "usage"]
