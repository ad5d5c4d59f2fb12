"""What the engine hands back: one :class:`RequestOutput` per request (vLLM's shape) and, while
streaming, :class:`StreamDelta` pieces."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

#: why an output ended: a stop condition (EOS, stop string or id, structured output complete), the
#: ``max_tokens`` budget or the model's context, or the request being aborted
FinishReason = Literal["stop", "length", "abort"]


@dataclass(frozen=True)
class Logprob:
    """The log-probability of one token at one position, its rank (1: most likely) and its text."""

    logprob: float
    rank: int
    decoded_token: str


@dataclass
class CompletionOutput:
    """One generated sequence (sample ``index`` of the request's ``n``)."""

    index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    cumulative_logprob: float | None = None
    #: per generated token, ``{token_id: Logprob}`` holding the chosen token and the top alternatives
    logprobs: list[dict[int, Logprob]] | None = None
    finish_reason: FinishReason | None = None
    #: the stop string or stop token id that ended it (None for EOS, length or abort)
    stop_reason: str | int | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RequestOutput:
    """The result of one request: its prompt and one :class:`CompletionOutput` per sample."""

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    #: prompt tokens whose keys and values came from the prefix cache instead of being computed
    num_cached_tokens: int = 0
    #: seconds (``time.monotonic()``) of arrival, first generated token and finish
    arrival_time: float = 0.0
    first_token_time: float | None = None
    finished_time: float | None = None

    @property
    def finished(self) -> bool:
        return all(o.finished for o in self.outputs)


@dataclass(frozen=True)
class StreamDelta:
    """What one engine step added to one sample of a request: new text (never a split UTF-8
    character, never part of a stop string), new token ids and their logprobs, and the finish reason
    on the last delta."""

    request_id: str
    index: int
    text_delta: str
    token_ids: list[int]
    logprobs: list[dict[int, Logprob]] | None = None
    finish_reason: FinishReason | None = None
    stop_reason: str | int | None = None


__all__ = ["CompletionOutput", "FinishReason", "Logprob", "RequestOutput", "StreamDelta"]
