"""Perplexity of a causal language model on a token stream: the number ``plugformer eval`` reports.

The tokens are cut into consecutive windows of ``seq_len + 1`` that share one boundary token (as the
trainer's validation does), so every token after the first is predicted exactly once, from up to
``seq_len`` tokens of context. The loss is the summed next-token cross-entropy divided by the number of
predicted tokens; perplexity is its exponential.
"""
from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from plugformer.precision import autocast
from plugformer.tokens import eval_windows


@dataclass
class Perplexity:
    """The result of :func:`perplexity`."""

    loss: float  # mean next-token cross-entropy (nats per token)
    perplexity: float
    tokens: int  # predicted tokens
    windows: int
    seq_len: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def window_nll(model: nn.Module, batches: Iterable[torch.Tensor], device: torch.device,
               precision: str = "fp32") -> tuple[float, int, int]:
    """(summed negative log-likelihood, predicted tokens, windows) of ``model`` over ``batches`` of
    (B, T+1) token windows."""
    total, count, windows = 0.0, 0, 0
    for batch in batches:
        batch = batch.to(device)
        with autocast(device, precision):
            logits = model(batch[:, :-1])
        nll = F.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten(), reduction="sum")
        total += float(nll)
        count += batch[:, 1:].numel()
        windows += batch.shape[0]
    return total, count, windows


def perplexity(model: nn.Module, tokens: np.ndarray, seq_len: int, *, batch_size: int = 8,
               max_batches: int | None = None, device: torch.device | str = "cpu",
               precision: str = "fp32", split: str = "eval") -> Perplexity:
    """Perplexity of ``model`` (in eval mode) on ``tokens``, in windows of ``seq_len`` predicted tokens;
    at most ``max_batches`` batches of ``batch_size`` windows (None: all of them)."""
    started = time.perf_counter()
    device = torch.device(device)
    model.eval()
    batches = eval_windows(np.asarray(tokens), max_batches, batch_size, seq_len, split=split)
    total, count, windows = window_nll(model, batches, device, precision)
    loss = total / max(count, 1)
    return Perplexity(loss, math.exp(min(loss, 50.0)), count, windows, seq_len, time.perf_counter() - started)
