"""The engine's bookkeeping for one request and each of its samples."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from plugformer.engine.outputs import CompletionOutput, FinishReason, RequestOutput, StreamDelta
from plugformer.engine.params import SamplingParams
from plugformer.engine.text import TextTracker


@dataclass
class Request:
    """A prompt, its parameters and its samples (``n`` :class:`Sequence` objects)."""

    request_id: str
    prompt: str | None
    prompt_ids: list[int]
    params: SamplingParams
    arrival: float = field(default_factory=time.monotonic)
    sequences: list[Sequence] = field(default_factory=list)
    first_token_time: float | None = None
    finished_time: float | None = None
    num_cached_tokens: int = 0

    @property
    def finished(self) -> bool:
        return all(s.finished for s in self.sequences)

    def output(self) -> RequestOutput:
        """The request's results so far, vLLM-shaped."""
        return RequestOutput(self.request_id, self.prompt, list(self.prompt_ids),
                             [s.completion() for s in self.sequences], self.num_cached_tokens, self.arrival,
                             self.first_token_time, self.finished_time)


class Sequence:
    """One sample: its tokens (prompt then output), how many of them are in the KV cache
    (``num_computed``), its blocks, its random stream, its decoded text and its stop state.

    Invariant: ``tokens[:num_computed]`` have keys and values in ``blocks``; the next forward pass
    computes ``tokens[num_computed:]`` (the whole prompt in chunks, then one token per step) and, once
    every token is computed, the sampler appends the next one.
    """

    def __init__(self, request: Request, index: int, tracker: TextTracker, generator: torch.Generator | None,
                 matcher: Any = None, wait_for: Sequence | None = None):
        self.request, self.index, self.params = request, index, request.params
        self.tokens: list[int] = list(request.prompt_ids)
        self.prompt_len = len(self.tokens)
        self.num_computed = 0
        #: tokens the draft model has cached (speculative decoding; follows ``num_computed``, at most one behind)
        self.draft_computed = 0
        self.blocks: list[int] = []
        self.registered = 0  # leading blocks already offered to the prefix cache
        self.tracker, self.generator, self.matcher = tracker, generator, matcher
        self.wait_for = wait_for  # a sibling whose prompt prefill this one waits for (to share it)
        self.logprobs: list | None = [] if self.params.logprobs is not None else None
        self.cumulative_logprob = 0.0
        self.finish_reason: FinishReason | None = None
        self.stop_reason: str | int | None = None
        self.aborted = False
        self.emitted_tokens = 0
        self.emitted_logprobs = 0
        self.final_emitted = False

    @property
    def output_ids(self) -> list[int]:
        return self.tokens[self.prompt_len:]

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def to_compute(self) -> int:
        """Tokens the next forward pass must compute before this sequence can sample again."""
        return len(self.tokens) - self.num_computed

    @property
    def prefilled(self) -> bool:
        """True once everything but the last sampled token is cached (it decodes one token per step)."""
        return self.to_compute <= 1

    def finish(self, reason: FinishReason, stop_reason: str | int | None = None) -> None:
        self.finish_reason, self.stop_reason = reason, stop_reason
        self.tracker.flush()

    def completion(self) -> CompletionOutput:
        text = self.tracker.text if self.finished else self.tracker.text[:self.tracker.released]
        return CompletionOutput(self.index, text,
                                self.output_ids, self.cumulative_logprob if self.logprobs is not None else None,
                                list(self.logprobs) if self.logprobs is not None else None, self.finish_reason,
                                self.stop_reason)

    def delta(self) -> StreamDelta | None:
        """What changed since the last delta (None when nothing did)."""
        if self.final_emitted:
            return None
        self.final_emitted = self.finished
        text = self.tracker.release(self.finished)
        ids = self.output_ids[self.emitted_tokens:]
        logprobs = self.logprobs[self.emitted_logprobs:] if self.logprobs is not None else None
        if not text and not ids and not self.finished:
            return None
        self.emitted_tokens += len(ids)
        self.emitted_logprobs += len(logprobs or ())
        return StreamDelta(self.request.request_id, self.index, text, ids, logprobs, self.finish_reason,
                           self.stop_reason)


__all__ = ["Request", "Sequence"]
