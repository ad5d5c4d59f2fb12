"""Pooling a causal language model's hidden states into one unit vector per text: the one definition the
``pooled`` embedder and the ``contrastive`` objective share, so a model trained contrastively embeds at inference
exactly as it was trained."""
from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

from plugformer.errors import ConfigError

Pooling = Literal["mean", "last"]
#: the poolings :func:`pool` knows: ``mean`` of the real tokens' states, or the ``last`` real token's state
POOLINGS: tuple[str, ...] = get_args(Pooling)


def pool(hidden: Tensor, mask: Tensor, pooling: Pooling = "mean") -> Tensor:
    """``hidden`` (B, T, D) and ``mask`` (B, T) bool (True: a real token; right padding) → (B, D) float32 rows
    of unit L2 length. A row with no real token is a ``ConfigError`` (an empty text has no embedding)."""
    if pooling not in POOLINGS:
        raise ConfigError(f"pooling {pooling!r} is not one of {', '.join(POOLINGS)}")
    counts = mask.sum(dim=1)
    if bool((counts == 0).any()):
        raise ConfigError("cannot embed an empty text: a row has no tokens")
    hidden = hidden.float()
    if pooling == "mean":
        weights = mask.to(hidden.dtype).unsqueeze(-1)
        pooled = (hidden * weights).sum(dim=1) / counts.to(hidden.dtype).unsqueeze(-1)
    else:
        last = (counts - 1).to(torch.long)
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    return torch.nn.functional.normalize(pooled, dim=-1)


def pooled_embeddings(model: torch.nn.Module, tokens: Tensor, mask: Tensor, pooling: Pooling = "mean") -> Tensor:
    """Unit vectors (B, D) for right-padded ``tokens`` (B, T) with ``mask`` (B, T) bool, from ``model``'s
    :meth:`~plugformer.model.Transformer.hidden_states` (padding masked out of attention, so a text's vector
    does not depend on its batch). Differentiable: the contrastive objective trains through it."""
    core = model
    for attribute in ("module", "base_model", "model"):  # DDP/peft wrappers hold the Transformer
        if hasattr(core, "hidden_states"):
            break
        core = getattr(core, attribute, core)
    if not hasattr(core, "hidden_states"):
        raise ConfigError(f"{type(model).__name__} has no hidden_states(): pooled embeddings need a plugformer "
                          "Transformer")
    hidden = core.hidden_states(tokens, padding_mask=mask)
    return pool(hidden, mask, pooling)


__all__ = ["POOLINGS", "Pooling", "pool", "pooled_embeddings"]
