"""The reference attention backend: the textbook formula, written out step by step.

It materialises the full (B, H, Tq, Tk) score matrix, so it is slow and memory-hungry, but every
step is visible, which makes it the ground truth the fused backends are tested against.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from plugformer.interfaces import Attention, ModelDims
from plugformer_attention.common import is_ragged, kv_groups, ragged_visibility, repeat_kv, visibility, window_of
from plugformer_attention.schemas import NaiveAttentionConfig


class NaiveAttention(Attention):
    """softmax(q kᵀ / √d + bias) v with scores and softmax in float32 for numerical stability.

    Causal and sliding-window masking both become ``-inf`` scores, so a key hidden by either rule
    (or by a ``-inf`` padding bias) gets exactly zero weight. Ragged batches (per-row ``q_offset`` and
    ``kv_lengths``, plugin API 1.1) use a per-row (B, 1, Tq, Tk) mask built the same way.
    """

    def __init__(self, config: NaiveAttentionConfig | None, dims: ModelDims):
        super().__init__(config, dims)
        self.window = window_of(config)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool,
                attn_bias: Tensor | None = None, q_offset: int | Tensor = 0,
                kv_lengths: Tensor | None = None) -> Tensor:
        groups = kv_groups(q, k)
        k, v = repeat_kv(k, groups), repeat_kv(v, groups)
        tq, tk = q.shape[2], k.shape[2]

        scores = (q.float() @ k.float().transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (B, H, Tq, Tk)
        if attn_bias is not None:
            scores = scores + attn_bias.float()
        if is_ragged(q_offset, kv_lengths):
            mask = ragged_visibility(q.shape[0], tq, tk, q_offset, kv_lengths, causal=causal, window=self.window,
                                     device=q.device)
        else:
            mask = visibility(tq, tk, q_offset, causal=causal, window=self.window, device=q.device)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        probs = F.dropout(probs, p=self.dims.dropout, training=self.training)
        return (probs.to(v.dtype) @ v).to(q.dtype)
