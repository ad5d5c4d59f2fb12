"""Chunked attention: the exact softmax attention, computed one block of keys at a time.

The online-softmax recurrence (Milakov & Gimelshein 2018; the core of FlashAttention) keeps, per query,
the running maximum ``m`` of the scores seen so far, the running denominator ``l`` and the running
weighted sum of values ``acc``; each new block rescales them by ``exp(m_old - m_new)``. Peak memory is
(B, H, Tq, chunk_size) scores instead of (B, H, Tq, Tk).

``softcap=c`` bounds every score to (-c, c) with ``c · tanh(score / c)`` before biases and masks are
applied, as Gemma 2 does for stability.

Ragged batches (plugin API 1.1, capability ``ragged``): the inference engine decodes rows that sit at
different positions in one call, passing ``q_offset`` as a (B,) tensor and ``kv_lengths`` (each row's
number of real keys; the keys after them are padding). Only the mask changes: it gains a batch dimension.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from plugformer.interfaces import Attention, ModelDims
from torch import Tensor

from plugformer_example.schemas import ChunkedAttentionConfig


class ChunkedAttention(Attention):
    """``Attention`` contract: causal/bidirectional, additive bias (padding included), GQA, KV-cache offsets,
    ragged batches (per-row ``q_offset``, ``kv_lengths``)."""

    def __init__(self, config: ChunkedAttentionConfig | None, dims: ModelDims):
        config = config or ChunkedAttentionConfig()
        if config.chunk_size < 1:
            raise ValueError(f"attention.chunk_size must be >= 1, got {config.chunk_size}")
        if config.softcap is not None and config.softcap <= 0:
            raise ValueError(f"attention.softcap must be > 0 (or null), got {config.softcap}")
        super().__init__(config, dims)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool,
                attn_bias: Tensor | None = None, q_offset: int | Tensor = 0,
                kv_lengths: Tensor | None = None) -> Tensor:
        groups = q.shape[1] // k.shape[1]  # GQA: query head h reads kv head h // groups
        if groups > 1:
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        work = torch.float32  # scores, exponentials and sums in float32 whatever the input dtype
        tq, tk = q.shape[2], k.shape[2]
        qs = q.to(work) * (1.0 / math.sqrt(q.shape[-1]))
        running_max = q.new_full((*q.shape[:3], 1), float("-inf"), dtype=work)
        denominator = q.new_zeros((*q.shape[:3], 1), dtype=work)
        acc = q.new_zeros(q.shape, dtype=work)
        # (Tq, 1) absolute query positions; a ragged batch's per-row offsets make them (B, 1, Tq, 1)
        q_pos = torch.arange(tq, device=q.device).unsqueeze(1)
        q_pos = q_pos + (q_offset.to(q.device).view(-1, 1, 1, 1) if isinstance(q_offset, Tensor) else q_offset)
        real = None if kv_lengths is None else kv_lengths.to(q.device).view(-1, 1, 1, 1)  # keys >= it: padding
        for start in range(0, tk, self.config.chunk_size):
            end = min(start + self.config.chunk_size, tk)
            scores = qs @ k[:, :, start:end].to(work).transpose(-2, -1)  # (B, H, Tq, chunk)
            if self.config.softcap is not None:
                scores = self.config.softcap * torch.tanh(scores / self.config.softcap)
            if attn_bias is not None:
                bias = attn_bias if attn_bias.shape[-1] == 1 else attn_bias[..., start:end]
                scores = scores + bias.to(work)
            keys = torch.arange(start, end, device=q.device)
            if causal:  # query i sits at absolute position q_offset + i and sees keys j <= it
                scores = scores.masked_fill(keys > q_pos, float("-inf"))
            if real is not None:
                scores = scores.masked_fill(keys >= real, float("-inf"))
            new_max = torch.maximum(running_max, scores.amax(dim=-1, keepdim=True))
            # rows that have seen only -inf so far keep a finite shift, so exp() gives 0, not nan
            shift = torch.where(torch.isfinite(new_max), new_max, torch.zeros_like(new_max))
            rescale = torch.exp(running_max - shift)
            weights = torch.exp(scores - shift)
            denominator = denominator * rescale + weights.sum(dim=-1, keepdim=True)
            weights = F.dropout(weights, p=self.dims.dropout, training=self.training)
            acc = acc * rescale + weights @ v[:, :, start:end].to(work)
            running_max = new_max
        # a query that saw no key at all (only in an empty ragged row) returns zeros instead of 0/0
        return torch.where(denominator > 0, acc / denominator, torch.zeros_like(acc)).to(q.dtype)
