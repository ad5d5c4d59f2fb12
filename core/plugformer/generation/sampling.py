"""How the next token is picked from a model's logits: greedy, or seeded temperature sampling with
optional top-k and top-p (nucleus) filtering. Pure functions of logits, so any decoding engine (one
sequence at a time today, batched later) picks exactly the same tokens for the same seed."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Sampling:
    """The sampling parameters of one request. ``temperature <= 0`` is greedy (argmax, no randomness);
    otherwise logits are divided by ``temperature``, filtered by ``top_k``/``top_p`` and sampled from a
    generator seeded with ``seed``, so the same request gives the same tokens."""

    max_new_tokens: int = 64
    temperature: float = 0.8
    top_k: int | None = None
    top_p: float | None = None
    seed: int = 0

    @property
    def greedy(self) -> bool:
        """True when the next token is the argmax (no random draw)."""
        return self.temperature <= 0


def filter_logits(logits: Tensor, top_k: int | None, top_p: float | None) -> Tensor:
    """Mask (to -inf) all but the ``top_k`` largest logits and outside the ``top_p`` nucleus (the
    smallest set of most likely tokens whose probability reaches ``top_p``). ``None``, ``top_k`` outside
    ``(0, vocab)`` and ``top_p`` outside ``(0, 1)`` disable the filter."""
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0 < top_p < 1:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        drop = probs.cumsum(-1) - probs > top_p  # keep the smallest prefix reaching top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def seeded_generator(sampling: Sampling, device: torch.device) -> torch.Generator:
    """The random generator of one request: seeded with ``sampling.seed`` on ``device``."""
    return torch.Generator(device=device).manual_seed(sampling.seed)


def pick_next(logits: Tensor, sampling: Sampling, generator: torch.Generator) -> int:
    """The next token id from one sequence's (1, vocab) or (vocab,) float logits."""
    if sampling.greedy:
        return int(logits.argmax(-1))
    logits = filter_logits(logits / sampling.temperature, sampling.top_k, sampling.top_p)
    return int(torch.multinomial(torch.softmax(logits, -1), 1, generator=generator))


__all__ = ["Sampling", "filter_logits", "pick_next", "seeded_generator"]
