"""Rotary position embedding (Su et al., 2021) in the rotate-half layout of GPT-NeoX and Llama.

Each pair of channels (i, i + d/2) of the rotated part of q and k turns by the angle
``position · base^(-2i/d)``, so the score q_m · k_n depends on positions only through m - n. The
cos/sin tables are computed in float32 for ``max_seq_len`` positions and kept as non-persistent
buffers (never checkpointed).

Options: ``partial_rotary_factor`` rotates only the first ``d`` channels of each head (d = that
fraction of head_dim, rounded down to an even number; GPT-NeoX, Phi), leaving the rest position-free.
``scaling`` stretches a trained context by ``scaling_factor``: ``linear`` divides positions by it
(position interpolation), ``ntk`` raises the base to ``base · factor^(d/(d-2))`` instead, which
stretches the low frequencies while leaving the highest nearly untouched.
"""
from __future__ import annotations

import torch
from torch import Tensor

from plugformer.interfaces import ModelDims, PositionEncoding, Positions
from plugformer_position.schemas import RopeConfig


def rope_cos_sin(positions: Tensor, rotary_dim: int, base: float,
                 position_scale: float = 1.0) -> tuple[Tensor, Tensor]:
    """(T,) positions → cos and sin, each (T, rotary_dim) float32, angles repeated for both halves.

    ``position_scale`` divides the positions first (linear scaling); fractional positions are fine.
    """
    inv_freq = base ** (-torch.arange(0, rotary_dim, 2, dtype=torch.float32, device=positions.device) / rotary_dim)
    angles = (positions.float() / position_scale).unsqueeze(1) * inv_freq  # (T, d/2)
    angles = torch.cat((angles, angles), dim=-1)  # (T, d): channel i and i + d/2 share an angle
    return angles.cos(), angles.sin()


def rotate_half(x: Tensor) -> Tensor:
    """(x1, x2) → (-x2, x1) on the two halves of the last dimension: a 90° turn of each pair."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the first ``cos.shape[-1]`` channels of x (…, T, D) by the per-position angles, in x's dtype."""
    d = cos.shape[-1]
    if d == x.shape[-1]:
        return x * cos.to(x.dtype) + rotate_half(x) * sin.to(x.dtype)
    rot, keep = x[..., :d], x[..., d:]
    return torch.cat((rot * cos.to(x.dtype) + rotate_half(rot) * sin.to(x.dtype), keep), dim=-1)


def rotary_dim(head_dim: int, partial_rotary_factor: float) -> int:
    """How many leading channels rope rotates: the fraction of head_dim, rounded down to even."""
    if not 0.0 < partial_rotary_factor <= 1.0:
        raise ValueError(f"rope partial_rotary_factor must be in (0, 1], got {partial_rotary_factor}")
    if partial_rotary_factor == 1.0 and head_dim % 2:
        raise ValueError(f"rope needs an even head_dim, got {head_dim}")
    d = int(round(head_dim * partial_rotary_factor, 6))  # round(…, 6): 0.3 · 10 must give 3, not 2
    d -= d % 2
    if d < 2:
        raise ValueError(f"rope partial_rotary_factor={partial_rotary_factor} of head_dim={head_dim} "
                         "leaves no channel pair to rotate")
    return d


def scaled_base(base: float, rotary_dim: int, scaling: str | None, factor: float) -> float:
    """The rope base after NTK-aware scaling (``base · factor^(d/(d-2))``); unchanged otherwise."""
    if scaling != "ntk" or factor == 1.0:
        return base
    if rotary_dim <= 2:
        raise ValueError("rope ntk scaling needs at least 4 rotated channels (the exponent is d/(d-2))")
    return base * factor ** (rotary_dim / (rotary_dim - 2))


class RotaryPosition(PositionEncoding):
    """Rotates q and k in every attention layer; no embedding, no bias, no parameters. Ragged batches
    (``positions.rows``) rotate each row by its own positions."""

    def __init__(self, config: RopeConfig | None, dims: ModelDims):
        super().__init__(config, dims)
        config = config or RopeConfig()
        try:
            self.rotary_dim = rotary_dim(dims.head_dim, config.partial_rotary_factor)
        except ValueError as exc:
            raise ValueError(f"{exc} (d_model={dims.d_model}, n_heads={dims.n_heads})") from None
        scaling = None if config.scaling is None else str(getattr(config.scaling, "value", config.scaling))
        if scaling not in (None, "linear", "ntk"):
            raise ValueError(f"rope scaling must be 'linear', 'ntk' or null, got {scaling!r}")
        if not config.scaling_factor > 0:
            raise ValueError(f"rope scaling_factor must be > 0, got {config.scaling_factor}")
        self.scaling = scaling
        self.base = scaled_base(config.base, self.rotary_dim, scaling, config.scaling_factor)
        self.position_scale = config.scaling_factor if scaling == "linear" else 1.0
        cos, sin = self._tables(torch.arange(dims.max_seq_len))
        self.register_buffer("cos_cached", cos, persistent=False)
        self.register_buffer("sin_cached", sin, persistent=False)

    def _tables(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        return rope_cos_sin(positions, self.rotary_dim, self.base, self.position_scale)

    def cos_sin(self, positions: Positions) -> tuple[Tensor, Tensor]:
        """Tables for ``positions``: sliced from the cache, computed on the fly beyond it. (T, d) for
        uniform positions; (B, 1, T, d) for a ragged batch (each row's own positions, broadcast over heads)."""
        if positions.rows is not None:
            rows = positions.rows.to(self.cos_cached.device)
            if positions.end > len(self.cos_cached):
                cos, sin = (t.view(*rows.shape, -1) for t in self._tables(rows.reshape(-1)))
            else:
                cos, sin = self.cos_cached[rows], self.sin_cached[rows]
            return cos.unsqueeze(1), sin.unsqueeze(1)
        if positions.end > len(self.cos_cached):
            return self._tables(positions.tensor)
        return self.cos_cached[positions.start:positions.end], self.sin_cached[positions.start:positions.end]

    def rotate(self, q: Tensor, k: Tensor, positions: Positions) -> tuple[Tensor, Tensor]:
        cos, sin = self.cos_sin(positions)
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
