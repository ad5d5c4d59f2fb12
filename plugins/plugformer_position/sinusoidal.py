"""Fixed sinusoidal positions from "Attention Is All You Need" (Vaswani et al., 2017).

PE[pos, 2i] = sin(pos / base^(2i/d)) and PE[pos, 2i+1] = cos(pos / base^(2i/d)). The table is
deterministic, so it is a non-persistent buffer: recomputed on construction, never checkpointed.
"""
from __future__ import annotations

import torch
from torch import Tensor

from plugformer.interfaces import ModelDims, PositionEncoding, Positions
from plugformer_position.schemas import SinusoidalPositionConfig


def sinusoid_table(positions: Tensor, d_model: int, base: float) -> Tensor:
    """(T,) positions → (T, d_model) float32 table, sin in even and cos in odd columns."""
    inv_freq = base ** (-torch.arange(0, d_model, 2, dtype=torch.float32, device=positions.device) / d_model)
    angles = positions.float().unsqueeze(1) * inv_freq  # (T, ceil(d/2))
    table = torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(1)  # interleave sin, cos
    return table[:, :d_model]  # an odd d_model drops the last cos column


class SinusoidalPosition(PositionEncoding):
    """Adds the fixed sin/cos vector of each position; extends past ``max_seq_len`` by computing it.

    Ragged batches (``positions.rows``) read each row's own positions from the table."""

    def __init__(self, config: SinusoidalPositionConfig | None, dims: ModelDims):
        super().__init__(config, dims)
        self.base = (config or SinusoidalPositionConfig()).base
        table = sinusoid_table(torch.arange(dims.max_seq_len), dims.d_model, self.base)
        self.register_buffer("table", table, persistent=False)

    def embed(self, x: Tensor, positions: Positions) -> Tensor:
        if positions.rows is not None:
            rows = positions.rows.to(self.table.device)
            if positions.end > len(self.table):
                pe = sinusoid_table(rows.reshape(-1), self.dims.d_model, self.base).view(*rows.shape, -1)
            else:
                pe = self.table[rows]  # (B, T, d_model)
            return x + pe.to(x.dtype)
        if positions.end > len(self.table):
            pe = sinusoid_table(positions.tensor, self.dims.d_model, self.base)
        else:
            pe = self.table[positions.start:positions.end]
        return x + pe.to(x.dtype)
