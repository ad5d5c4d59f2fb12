"""From a batch of next-token logits to one token per row, each row under its own request's rules.

Order per row (each step depends only on that row, so a request's tokens do not depend on what else
is in the batch): penalties → structured-output mask → greedy argmax, or temperature → top-k/top-p
(:func:`plugformer.generation.filter_logits`, the same filter single-sequence decoding uses) → min-p →
a draw from the request's own seeded generator. Logprobs come from the raw distribution.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from plugformer.engine.outputs import Logprob
from plugformer.engine.params import SamplingParams
from plugformer.generation import filter_logits


def apply_penalties(logits: Tensor, params: SamplingParams, prompt: Sequence[int], output: Sequence[int]) -> Tensor:
    """One row's (vocab,) logits after ``repetition_penalty`` (over prompt and output; positive logits
    divided, negative multiplied) and OpenAI's ``presence_penalty``/``frequency_penalty`` (output only)."""
    vocab = logits.shape[-1]
    if params.repetition_penalty != 1.0:
        seen = torch.zeros(vocab, dtype=torch.bool, device=logits.device)
        seen[torch.tensor(list(prompt) + list(output), dtype=torch.long, device=logits.device)] = True
        scaled = torch.where(logits > 0, logits / params.repetition_penalty, logits * params.repetition_penalty)
        logits = torch.where(seen, scaled, logits)
    if (params.presence_penalty or params.frequency_penalty) and output:
        counts = torch.bincount(torch.tensor(list(output), dtype=torch.long, device=logits.device),
                                minlength=vocab)[:vocab].to(logits.dtype)
        logits = logits - params.frequency_penalty * counts - params.presence_penalty * (counts > 0).to(logits.dtype)
    return logits


def draw(logits: Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    """The next token from one row's processed (vocab,) float logits."""
    if params.greedy:
        return int(logits.argmax(-1))
    logits = filter_logits(logits / params.temperature, params.top_k, params.top_p)
    probs = torch.softmax(logits, -1)
    if params.min_p > 0:
        probs = probs.masked_fill(probs < params.min_p * probs.max(), 0.0)
    return int(torch.multinomial(probs, 1, generator=generator))


def token_logprobs(raw: Tensor, chosen: int, top: int, decode) -> tuple[float, dict[int, Logprob]]:
    """The chosen token's log-probability and ``{id: Logprob}`` for it and the ``top`` most likely ids."""
    logp = torch.log_softmax(raw.float(), -1)
    value = float(logp[chosen])
    rank = int((logp > logp[chosen]).sum()) + 1
    entry = {chosen: Logprob(value, rank, decode(chosen))}
    if top:
        values, ids = torch.topk(logp, top)
        for r, (v, i) in enumerate(zip(values.tolist(), ids.tolist()), start=1):
            entry.setdefault(i, Logprob(v, r, decode(i)))
    return value, entry


__all__ = ["apply_penalties", "draw", "token_logprobs"]
