"""T5 relative position bias (Raffel et al., 2020, "Exploring the Limits of Transfer Learning").

Each head learns one scalar per distance bucket; the bias ``b[h, bucket(k - q)]`` is added to the
attention scores. Half the buckets hold exact small distances, the rest cover ``max_exact ..
max_distance`` on a log scale, and every longer distance falls in the last bucket, so the encoding
works at any length (it extrapolates). Causal models use one direction; bidirectional ones split the
buckets between keys before and after the query. Ragged batches (plugin API 1.1): query positions per
row (``Positions.rows``) give one bias per row.
"""
from __future__ import annotations

import math

import torch
from plugformer.interfaces import ModelDims, PositionEncoding, Positions
from torch import Tensor, nn

from plugformer_example.schemas import T5BiasConfig


def relative_buckets(relative: Tensor, causal: bool, num_buckets: int, max_distance: int) -> Tensor:
    """Bucket index (int64) of each relative position ``key - query``."""
    distance = -relative  # > 0: the key is before the query
    offset = torch.zeros_like(relative)
    if causal:
        distance = distance.clamp(min=0)
    else:
        num_buckets //= 2
        offset = (distance < 0).long() * num_buckets  # keys after the query use the upper half
        distance = distance.abs()
    max_exact = max(num_buckets // 2, 1)
    log_ratio = torch.log(distance.clamp(min=1).float() / max_exact) / math.log(max(max_distance / max_exact, 1 + 1e-6))
    large = max_exact + (log_ratio * (num_buckets - max_exact)).long()
    large = large.clamp(max=num_buckets - 1)
    return offset + torch.where(distance < max_exact, distance, large)


class T5RelativeBias(PositionEncoding):
    """A learned (num_buckets, n_heads) table read through :func:`relative_buckets`."""

    def __init__(self, config: T5BiasConfig | None, dims: ModelDims):
        super().__init__(config, dims)
        config = config or T5BiasConfig()
        if config.num_buckets < 2 or config.max_distance < 1:
            raise ValueError(f"position.num_buckets must be >= 2 and position.max_distance >= 1, got "
                             f"{config.num_buckets} and {config.max_distance}")
        self.num_buckets, self.max_distance = config.num_buckets, config.max_distance
        self.bias = nn.Embedding(config.num_buckets, dims.n_heads)
        nn.init.normal_(self.bias.weight, std=0.02)

    def attention_bias(self, q_positions: Positions, k_positions: Positions) -> Tensor:
        """(1, H, Tq, Tk) float32 bias; (B, H, Tq, Tk) when the positions are ragged (per row)."""
        device = self.bias.weight.device
        if q_positions.is_ragged or k_positions.is_ragged:
            q_rows, k_rows = q_positions.per_row().to(device), k_positions.per_row().to(device)
            relative = k_rows.unsqueeze(1) - q_rows.unsqueeze(2)  # (B, Tq, Tk)
            buckets = relative_buckets(relative, self.dims.causal, self.num_buckets, self.max_distance)
            return self.bias(buckets).float().permute(0, 3, 1, 2)
        relative = k_positions.tensor.to(device).unsqueeze(0) - q_positions.tensor.to(device).unsqueeze(1)
        buckets = relative_buckets(relative, self.dims.causal, self.num_buckets, self.max_distance)
        return self.bias(buckets).float().permute(2, 0, 1).unsqueeze(0)
