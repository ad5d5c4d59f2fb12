"""Rotary position embedding (Su et al., 2021) in the rotate-half layout of GPT-NeoX and Llama.

Each pair of channels (i, i + D/2) of q and k is rotated by the angle ``position · base^(-2i/D)``,
so the score q_m · k_n depends on positions only through m - n. The cos/sin tables are computed
in float32 for ``max_seq_len`` positions and kept as non-persistent buffers (never checkpointed).
"""
from __future__ import annotations

import torch
from torch import Tensor

from plugformer.interfaces import ModelDims, PositionEncoding, Positions
from plugformer_position.schemas import RopeConfig


def rope_cos_sin(positions: Tensor, head_dim: int, base: float) -> tuple[Tensor, Tensor]:
    """(T,) positions → cos and sin, each (T, head_dim) float32, the angles repeated for both halves."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim)
    angles = positions.float().unsqueeze(1) * inv_freq  # (T, D/2)
    angles = torch.cat((angles, angles), dim=-1)  # (T, D): channel i and i + D/2 share an angle
    return angles.cos(), angles.sin()


def rotate_half(x: Tensor) -> Tensor:
    """(x1, x2) → (-x2, x1) on the two halves of the last dimension: a 90° turn of each pair."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x (…, T, D) by the per-position angles, in x's dtype."""
    return x * cos.to(x.dtype) + rotate_half(x) * sin.to(x.dtype)


class RotaryPosition(PositionEncoding):
    """Rotates q and k in every attention layer; no embedding, no bias, no parameters."""

    def __init__(self, config: RopeConfig | None, dims: ModelDims):
        super().__init__(config, dims)
        if dims.head_dim % 2:
            raise ValueError(f"rope needs an even head_dim, got {dims.head_dim} "
                             f"(d_model={dims.d_model}, n_heads={dims.n_heads})")
        self.base = (config or RopeConfig()).base
        cos, sin = rope_cos_sin(torch.arange(dims.max_seq_len), dims.head_dim, self.base)
        self.register_buffer("cos_cached", cos, persistent=False)
        self.register_buffer("sin_cached", sin, persistent=False)

    def cos_sin(self, positions: Positions) -> tuple[Tensor, Tensor]:
        """Tables for ``positions``: sliced from the cache, computed on the fly beyond it."""
        if positions.end > len(self.cos_cached):
            return rope_cos_sin(positions.tensor, self.dims.head_dim, self.base)
        return self.cos_cached[positions.start:positions.end], self.sin_cached[positions.start:positions.end]

    def rotate(self, q: Tensor, k: Tensor, positions: Positions) -> tuple[Tensor, Tensor]:
        cos, sin = self.cos_sin(positions)
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
