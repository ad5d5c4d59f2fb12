"""The kit's own statement of exact softmax attention, in float64, and how close is close enough.

Backends declaring ``exact_softmax`` are compared with the registered ``naive`` backend (the project's
reference); ``naive`` itself, and cases it does not declare (a sliding window), are compared with
:func:`attention_formula`, an independent float64 transcription of the ``Attention`` docstring. Other
attention variants are held only to the self-consistency properties of the attention contract, with
the same :data:`TOLERANCES`.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

#: (atol, rtol) for comparing a backend's output in a dtype with a float32/float64 value (the reference, or the
#: backend's own float32 output): a few units of the dtype's rounding for the kit's sizes (D=8, T<=9), where
#: a wrong mask or a missing bias is off by 0.1 or more
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-7, 1e-6),
    torch.float32: (2e-5, 1e-4),
    torch.bfloat16: (4e-2, 4e-2),
    torch.float16: (6e-3, 6e-3),
}


def visible(tq: int, tk: int, q_offset: int, causal: bool, window: int | None, device: Any) -> Tensor:
    """(Tq, Tk) bool: key ``j`` visible to query ``i`` at absolute position ``q_offset + i``."""
    distance = (torch.arange(tq, device=device)[:, None] + q_offset) - torch.arange(tk, device=device)[None, :]
    seen = torch.ones(tq, tk, dtype=torch.bool, device=device)
    if causal:
        seen &= distance >= 0
    if window is not None:
        seen &= (distance < window) if causal else (distance.abs() < window)
    return seen


def attention_formula(q: Tensor, k: Tensor, v: Tensor, *, causal: bool, attn_bias: Tensor | None = None,
                      q_offset: int = 0, window: int | None = None) -> Tensor:
    """softmax(q kᵀ/√D + bias, masked) v in float64; query head h reads kv head h // (H/Hkv)."""
    groups = q.shape[1] // k.shape[1]
    k64 = k.double().repeat_interleave(groups, dim=1)
    v64 = v.double().repeat_interleave(groups, dim=1)
    scores = q.double() @ k64.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if attn_bias is not None:
        scores = scores + attn_bias.double()
    mask = visible(q.shape[2], k.shape[2], q_offset, causal, window, q.device)
    scores = scores.masked_fill(~mask, float("-inf"))
    return (torch.softmax(scores, dim=-1) @ v64).to(q.dtype)


def as_reference(fn: Callable[..., Tensor], window: int | None) -> Callable[..., Tensor]:
    """Give the formula the same call signature as a backend (``window`` is then a construction option)."""
    return lambda q, k, v, **kw: fn(q, k, v, window=window, **kw)


def assert_close(actual: Tensor, expected: Tensor, what: str, dtype: torch.dtype | None = None, *,
                 atol: float | None = None, rtol: float | None = None) -> None:
    """Compare in float32 with the tolerance of ``dtype`` (default: ``actual``'s), naming the case."""
    default_atol, default_rtol = TOLERANCES.get(dtype or actual.dtype, TOLERANCES[torch.float32])
    atol, rtol = default_atol if atol is None else atol, default_rtol if rtol is None else rtol
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)}, expected {tuple(expected.shape)}"
    torch.testing.assert_close(actual.float().cpu(), expected.float().cpu(), atol=atol, rtol=rtol,
                               msg=lambda m: f"{what}: {m}")
