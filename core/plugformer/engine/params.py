"""What a request asks of the engine: :class:`SamplingParams`, named as vLLM names them."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from plugformer.errors import ConfigError

#: the most alternatives a request may ask logprobs for (OpenAI's limit for ``top_logprobs``)
MAX_LOGPROBS = 20


def _fail(name: str, value: Any, rule: str) -> None:
    raise ConfigError(f"SamplingParams.{name}={value!r}: {rule}")


@dataclass(frozen=True)
class SamplingParams:
    """How one request is decoded. Field names follow vLLM's where they exist.

    - ``max_tokens``: new tokens at most; ``temperature`` 0 is greedy (argmax), otherwise logits are
      divided by it and filtered by ``top_k`` (None/0/-1: off), ``top_p`` (1: off) and ``min_p``
      (0: off: drop tokens below ``min_p`` × the top token's probability) before a seeded draw.
    - ``seed``: the request's own random stream (sample ``i`` of ``n`` uses ``seed + i``), so its output
      does not depend on the other requests in flight; None draws a fresh seed.
    - ``stop``: strings that end the output when the decoded text contains one (matched across token
      boundaries; left out of the text unless ``include_stop_str_in_output``); ``stop_token_ids`` end it
      at those ids (left out of the text). The end-of-document id stops it unless ``ignore_eos``.
    - ``n``: independent samples of the same prompt (the prompt is computed once, then shared through
      the prefix cache).
    - ``logprobs``: for each generated token, its log-probability and the ``logprobs`` most likely
      alternatives (under the model's raw distribution, before penalties and temperature).
    - ``presence_penalty``/``frequency_penalty`` (OpenAI, on generated tokens, -2..2) and
      ``repetition_penalty`` (CTRL/HF, on prompt and generated tokens, > 0, 1: off).
    - ``adapter``: the name of a LoRA adapter loaded with :meth:`Engine.add_adapter` (None: the base model).
    - ``structured``: a :class:`plugformer.interfaces.GuideSpec` (JSON schema, regex, choice) the output
      must follow, enforced by the engine's ``guide`` plugin.
    """

    max_tokens: int = 16
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float = 1.0
    min_p: float = 0.0
    seed: int | None = None
    stop: Sequence[str] = field(default=())
    stop_token_ids: Sequence[int] = field(default=())
    include_stop_str_in_output: bool = False
    n: int = 1
    logprobs: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    ignore_eos: bool = False
    adapter: str | None = None
    structured: Any = None

    def __post_init__(self) -> None:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        if any(not isinstance(s, str) or not s for s in stop):
            _fail("stop", self.stop, "must be a non-empty string or a list of them")
        object.__setattr__(self, "stop", stop)
        ids = tuple(self.stop_token_ids or ())
        if any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in ids):
            _fail("stop_token_ids", self.stop_token_ids, "must be a list of token ids (integers >= 0)")
        object.__setattr__(self, "stop_token_ids", ids)
        if self.top_k is not None and self.top_k in (0, -1):
            object.__setattr__(self, "top_k", None)
        self._check()

    def _check(self) -> None:
        def integer(name: str, low: int, high: int | None = None) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None
                                                                                        and value > high):
                _fail(name, value, f"must be an integer >= {low}" + (f" and <= {high}" if high is not None else ""))

        def number(name: str, low: float, high: float, low_open: bool = False) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                _fail(name, value, "must be a number")
            if (value <= low if low_open else value < low) or value > high:
                _fail(name, value, f"must be in {'(' if low_open else '['}{low}, {high}]")

        integer("max_tokens", 1)
        integer("n", 1, 128)
        number("temperature", 0.0, float("inf"))
        number("top_p", 0.0, 1.0, low_open=True)
        number("min_p", 0.0, 1.0)
        number("presence_penalty", -2.0, 2.0)
        number("frequency_penalty", -2.0, 2.0)
        number("repetition_penalty", 0.0, float("inf"), low_open=True)
        if self.top_k is not None:
            integer("top_k", 1)
        if self.logprobs is not None:
            integer("logprobs", 0, MAX_LOGPROBS)
        if self.seed is not None:
            integer("seed", 0, 2**63 - 1)
        if self.adapter is not None and (not isinstance(self.adapter, str) or not self.adapter):
            _fail("adapter", self.adapter, "must be the name of a loaded adapter")

    @property
    def greedy(self) -> bool:
        """True when each next token is the argmax (no random draw)."""
        return self.temperature == 0

    @property
    def penalised(self) -> bool:
        """True when any repetition penalty changes the logits."""
        return bool(self.presence_penalty or self.frequency_penalty or self.repetition_penalty != 1.0)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Every field a request may set (for front ends that map their own names onto these)."""
        return tuple(f.name for f in fields(cls))


__all__ = ["MAX_LOGPROBS", "SamplingParams"]
