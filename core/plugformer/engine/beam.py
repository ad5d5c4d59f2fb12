"""Beam search that returns what Hugging Face ``generate(num_beams=N, do_sample=False)`` returns, token for
token, with the same sequence scores.

The rules are Hugging Face's (transformers 5.x), so a model imported from the Hub decodes identically here:

- the search keeps ``N`` running beams; at the first step only the prompt's beam is live (the others start
  at a score of ``-1e9``), so the ``N`` beams are the best first tokens, not ``N`` copies of one;
- each step ranks the ``2·N`` best continuations of all beams by their summed log-probabilities; those
  ending in ``eos_id`` (or reaching ``max_tokens``) and ranked among the first ``N`` are offered to the
  ``N`` finished hypotheses with the score ``sum of log-probs / generated_length ** length_penalty``
  (the length counts the eos token); the best ``N`` unfinished ones keep running;
- ``early_stopping``: ``True`` stops as soon as ``N`` hypotheses are finished; ``False`` also stops once
  the best running beam, scored at its current length, cannot beat the worst finished one; ``"never"``
  makes that estimate at the longest length (``max_tokens``) when ``length_penalty > 0``;
- the finished hypotheses come back best first; ``num_return_sequences`` of them are returned.

The prompt is prefilled once (batch 1) into the model's dense KV cache, which is then copied to the ``N``
beams and reordered after each step (:meth:`plugformer.interfaces.DecodeCache.reorder`); a model without
``new_cache`` is recomputed over the whole sequence each step.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from plugformer.errors import ConfigError
from plugformer.generation import context_length, fit_prompt
from plugformer.precision import autocast

#: the score Hugging Face gives a hypothesis that must never be chosen (kept exactly, so ties break alike)
IMPOSSIBLE = -1.0e9

#: why a beam ended: its last token was ``eos_id`` (left out of the tokens), or ``max_tokens`` were generated
BeamFinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class BeamResult:
    """One finished hypothesis: its new token ids (without the prompt and without the eos id), Hugging
    Face's sequence score (summed log-probabilities divided by ``generated_length ** length_penalty``, the
    eos token counted) and why it ended."""

    token_ids: list[int]
    score: float
    finish_reason: BeamFinishReason


def check_beam_options(num_beams: int, max_tokens: int, length_penalty: float, early_stopping: bool | str,
                       num_return_sequences: int) -> None:
    """Refuse beam-search options that cannot run, in one line naming the value and what is allowed
    (a :class:`~plugformer.errors.ConfigError`)."""
    if isinstance(num_beams, bool) or not isinstance(num_beams, int) or num_beams < 1:
        raise ConfigError(f"num_beams={num_beams!r} must be an integer >= 1")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ConfigError(f"max_tokens={max_tokens!r} must be an integer >= 1")
    if isinstance(num_return_sequences, bool) or not isinstance(num_return_sequences, int) \
            or not 1 <= num_return_sequences <= num_beams:
        raise ConfigError(f"num_return_sequences={num_return_sequences!r} must be an integer from 1 to "
                          f"num_beams={num_beams}")
    if not (early_stopping is True or early_stopping is False or early_stopping == "never"):
        raise ConfigError(f"early_stopping={early_stopping!r} must be one of True, False, 'never'")
    if isinstance(length_penalty, bool) or not isinstance(length_penalty, (int, float)) \
            or not math.isfinite(length_penalty):
        raise ConfigError(f"length_penalty={length_penalty!r} must be a finite number")


class _Finished:
    """The ``N`` best finished hypotheses so far, best first: scores, token ids and whether each slot holds a
    real hypothesis yet (empty slots score ``IMPOSSIBLE``)."""

    def __init__(self, num_beams: int, device: torch.device):
        self.scores = torch.full((num_beams,), IMPOSSIBLE, dtype=torch.float32, device=device)
        self.done = torch.zeros(num_beams, dtype=torch.bool, device=device)
        self.tokens: list[list[int]] = [[] for _ in range(num_beams)]

    @property
    def full(self) -> bool:
        return bool(self.done.all())

    def offer(self, scores: Tensor, tokens: Tensor, eligible: Tensor) -> None:
        """Merge the candidates (``scores`` already penalised where not ``eligible``) and keep the best ``N``."""
        merged = torch.cat([self.scores, scores])
        best = torch.topk(merged, self.scores.shape[0]).indices
        n = self.scores.shape[0]
        picks = best.tolist()
        self.tokens = [self.tokens[i] if i < n else tokens[i - n].tolist() for i in picks]
        self.scores = merged[best]
        self.done = torch.cat([self.done, eligible])[best]

    def may_improve(self, best_running: Tensor) -> bool:
        """Whether the best running beam's (estimated final) score could still enter the finished ones."""
        worst = torch.where(self.done, self.scores.min(), IMPOSSIBLE)
        return bool((best_running > worst).any())


@torch.no_grad()
def beam_search(model: nn.Module, prompt: Sequence[int], *, num_beams: int, max_tokens: int, eos_id: int | None,
                length_penalty: float = 1.0, early_stopping: bool | str = False, num_return_sequences: int = 1,
                precision: Any = "fp32", device: torch.device | None = None) -> list[BeamResult]:
    """The ``num_return_sequences`` best continuations of ``prompt`` (token ids) by beam search with
    ``num_beams`` beams, best first, as Hugging Face's ``generate(num_beams=..., do_sample=False,
    max_new_tokens=max_tokens, length_penalty=..., early_stopping=..., eos_token_id=eos_id)`` finds them.

    ``eos_id`` None: beams only end at ``max_tokens``. An empty prompt starts from ``eos_id`` (a document
    boundary). Bad options, and a prompt that leaves no room for ``max_tokens`` in the model's context,
    are refused with a one-line :class:`~plugformer.errors.ConfigError`. ``model`` is a
    :class:`plugformer.model.Transformer` (KV cache used) or any ``model(tokens) -> (B, T, vocab)`` logits
    callable; it runs in eval mode (its mode is restored afterwards) on ``device`` (default: its first
    parameter's), under bf16 autocast when ``precision`` is bf16.
    """
    check_beam_options(num_beams, max_tokens, length_penalty, early_stopping, num_return_sequences)
    if not prompt and eos_id is None:
        raise ConfigError("an empty prompt needs an eos_id to start from; give at least one prompt token")
    ids = fit_prompt(prompt, max_tokens, context_length(model), eos_id)
    device = device if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        finished = _search(model, ids, num_beams, max_tokens, eos_id, float(length_penalty), early_stopping,
                           precision, device)
    finally:
        model.train(was_training)
    return [_result(finished.tokens[i], float(finished.scores[i]), eos_id) for i in range(num_return_sequences)]


def _result(tokens: list[int], score: float, eos_id: int | None) -> BeamResult:
    if eos_id is not None and tokens and tokens[-1] == eos_id:
        return BeamResult(tokens[:-1], score, "stop")
    return BeamResult(tokens, score, "length")


def _search(model: nn.Module, ids: list[int], num_beams: int, max_tokens: int, eos_id: int | None,
            length_penalty: float, early_stopping: bool | str, precision: Any, device: torch.device) -> _Finished:
    """Run the search; the finished hypotheses, best first."""
    n = num_beams
    prompt = torch.tensor([ids], device=device)
    cache = model.new_cache(1, len(ids) + max_tokens) if hasattr(model, "new_cache") else None
    running = torch.zeros((n, 0), dtype=torch.long, device=device)  # generated ids of each running beam
    running_scores = torch.full((n,), IMPOSSIBLE, dtype=torch.float32, device=device)
    running_scores[0] = 0.0  # only the prompt's own beam is live at first
    finished = _Finished(n, device)
    first_n = torch.arange(2 * n, device=device) < n  # only the best N candidates may finish
    step_input = prompt
    for step in range(max_tokens):
        with autocast(device, precision):
            if cache is not None:
                logits = model(step_input, cache=cache)
            else:  # recomputed over prompt and generated ids (one row for the prompt's own beam at first)
                logits = model(torch.cat([prompt.expand(n, -1), running], dim=1) if step else prompt)
        # every beam's continuations ranked by summed log-probability; the best 2N are candidates
        log_probs = torch.log_softmax(logits[:, -1, :].float(), dim=-1)
        vocab = log_probs.shape[-1]
        totals = (log_probs.expand(n, -1) + running_scores[:, None]).reshape(-1)
        cand_scores, flat = torch.topk(totals, 2 * n)
        origin, token = flat // vocab, flat % vocab
        cand_tokens = torch.cat([running[origin], token[:, None]], dim=1)
        ends = token == eos_id if eos_id is not None else torch.zeros_like(first_n)
        if step + 1 >= max_tokens:
            ends = torch.ones_like(first_n)

        # the best N candidates that did not end keep running
        alive_scores = cand_scores + ends.float() * IMPOSSIBLE
        keep = torch.topk(alive_scores, n).indices

        # ended candidates among the best N are offered to the finished hypotheses, length-normalised
        # (Hugging Face also bars offers once its stopping rules hold; here the loop has ended by then)
        length = step + 1
        eligible = ends & first_n
        finished.offer(cand_scores / (length ** length_penalty) + (~eligible).float() * IMPOSSIBLE, cand_tokens,
                       eligible)

        running, running_scores = cand_tokens[keep], alive_scores[keep]
        # stop at max_tokens, when N are finished (early_stopping=True) or when none can improve any more
        if bool(ends.all()) or (finished.full and early_stopping is True):
            break
        hoped_length = max_tokens if early_stopping == "never" and length_penalty > 0.0 else length
        if not finished.may_improve(running_scores[:1] / (hoped_length ** length_penalty)):
            break
        if cache is not None:
            cache.reorder(origin[keep] if step else torch.zeros(n, dtype=torch.long, device=device))
            step_input = running[:, -1:]
    return finished


__all__ = ["BeamFinishReason", "BeamResult", "beam_search", "check_beam_options"]
