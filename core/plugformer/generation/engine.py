"""The one decoding path: token-id prompts plus sampling parameters in, completions (token ids and why
each stopped) out. ``plugformer generate``, the exact-match evaluation of fine-tuning and the
lm-evaluation-harness adapter all decode through :func:`generate`.

The signature is batch-shaped (a list of prompts, one :class:`Sampling` each or one for all) so that a
batched engine can replace the insides without changing callers; today each prompt is decoded on its
own: the prompt is prefilled into a KV cache (when the model has one), then one token per step is
picked by :func:`plugformer.generation.sampling.pick_next` from a generator seeded per request.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from plugformer.generation.sampling import Sampling, pick_next, seeded_generator
from plugformer.precision import autocast

#: why a completion ended: the end-of-document id (left out of the tokens), ``max_new_tokens``, or the
#: model's context (``max_seq_len``) being full
FinishReason = Literal["eos", "length", "context"]


@dataclass(frozen=True)
class Completion:
    """The new token ids generated for one prompt (without the prompt and without the eos id) and why
    decoding stopped."""

    tokens: list[int]
    finish_reason: FinishReason


def context_length(model: nn.Module) -> int | None:
    """The longest sequence ``model`` accepts (``dims.max_seq_len`` of it or of a module inside it,
    e.g. under an adapter or a wrapper), or None when it declares none."""
    for module in model.modules():
        dims = getattr(module, "dims", None)
        if dims is not None and hasattr(dims, "max_seq_len"):
            return int(dims.max_seq_len)
    return None


def fit_prompt(prompt: Sequence[int], max_new_tokens: int, limit: int | None, eos_id: int | None,
               crop: bool = False) -> list[int]:
    """``prompt`` ready to decode: an empty prompt becomes ``[eos_id]`` (a document boundary, as in the
    training data). A prompt too long to leave room for ``max_new_tokens`` is refused naming both numbers
    (a :class:`~plugformer.errors.ConfigError`), or keeps its tail when ``crop`` (callers that score
    fixed-format prompts, such as the held-out exact match, ask for that explicitly)."""
    from plugformer.config.ranges import check_prompt_fits

    ids = list(prompt)
    if not ids:
        if eos_id is None:
            raise ValueError("an empty prompt needs an eos_id to start from")
        ids = [eos_id]
    if limit is not None and len(ids) + max_new_tokens > limit:
        if not crop:
            check_prompt_fits(len(ids), max_new_tokens, limit)
        ids = ids[-max(1, limit - max_new_tokens):]
    return ids


@torch.no_grad()
def generate(model: nn.Module, prompts: Sequence[Sequence[int]], sampling: Sampling | Sequence[Sampling], *,
             eos_id: int | None, precision: Any = "fp32", use_cache: bool = True,
             device: torch.device | None = None, crop_prompts: bool = False) -> list[Completion]:
    """Continue each of ``prompts`` (token ids) with ``model``; one :class:`Completion` per prompt, in order.

    ``sampling`` is one :class:`Sampling` for every prompt or one per prompt. Decoding of a prompt stops
    at ``eos_id`` (None: never), after ``max_new_tokens``, or when the sequence fills the model's
    context. The KV cache is used when ``use_cache`` and the model has ``new_cache`` (a
    :class:`plugformer.model.Transformer`); any other callable ``model(tokens) -> (B, T, vocab)`` logits
    is recomputed over the whole sequence each step. The model is put in eval mode and its previous
    mode restored afterwards, so this can run in the middle of training. Tensors go to ``device``
    (default: the device of the model's first parameter).
    """
    requests = [sampling] * len(prompts) if isinstance(sampling, Sampling) else list(sampling)
    if len(requests) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(requests)} sampling parameters")
    device = device if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        return [_one(model, prompt, request, eos_id, precision, use_cache, device, crop_prompts)
                for prompt, request in zip(prompts, requests)]
    finally:
        model.train(was_training)


def _one(model: nn.Module, prompt: Sequence[int], sampling: Sampling, eos_id: int | None, precision: Any,
         use_cache: bool, device: torch.device, crop: bool) -> Completion:
    limit = context_length(model)
    ids = fit_prompt(prompt, sampling.max_new_tokens, limit, eos_id, crop)
    rng = seeded_generator(sampling, device)
    cached = use_cache and hasattr(model, "new_cache") and limit is not None
    cache = model.new_cache(1, limit) if cached else None
    tokens = torch.tensor([ids], device=device)
    step_input = tokens
    out: list[int] = []
    for _ in range(sampling.max_new_tokens):
        with autocast(device, precision):
            logits = model(step_input, cache=cache) if cached else model(tokens)
        next_id = pick_next(logits[:, -1, :].float(), sampling, rng)
        if next_id == eos_id:
            return Completion(out, "eos")
        out.append(next_id)
        step_input = torch.tensor([[next_id]], device=device)
        tokens = torch.cat([tokens, step_input], dim=1)
        if limit is not None and tokens.shape[1] >= limit:
            return Completion(out, "context" if len(out) < sampling.max_new_tokens else "length")
    return Completion(out, "length")


__all__ = ["Completion", "FinishReason", "context_length", "fit_prompt", "generate"]
