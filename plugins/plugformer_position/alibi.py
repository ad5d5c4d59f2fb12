"""ALiBi: attention with linear biases (Press et al., 2022, "Train Short, Test Long").

No embedding and no rotation: each head adds ``-slope · distance`` to its attention scores, so far
keys are penalised linearly and the model extrapolates to longer inputs than it was trained on. The
bias reaches the kernel as ``attn_bias``, hence the ``needs_attention: [attention_bias]`` capability.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from plugformer.interfaces import ModelDims, PositionEncoding, Positions
from plugformer_position.schemas import AlibiConfig


def alibi_slopes(n_heads: int, max_bias: float = 8.0) -> Tensor:
    """(n_heads,) float32 slopes, the paper's recipe.

    For a power of two n, slopes form the geometric sequence 2^(-max_bias/n), 2^(-2·max_bias/n), ….
    Otherwise the paper takes the n' = 2^⌊log2 n⌋ slopes of that sequence and adds the missing
    n - n' from the sequence for 2n' heads, using every other one (its odd terms) so the extra slopes
    fall between the ones already taken.
    """
    if n_heads < 1:
        raise ValueError(f"alibi needs at least one head, got n_heads={n_heads}")

    def geometric(n: int) -> list[float]:
        return [2.0 ** (-max_bias * (i + 1) / n) for i in range(n)]

    closest = 2 ** math.floor(math.log2(n_heads))
    slopes = geometric(closest) + geometric(2 * closest)[0::2][: n_heads - closest]
    return torch.tensor(slopes, dtype=torch.float32)


class AlibiPosition(PositionEncoding):
    """Per-head linear distance penalties as an attention bias; causal or symmetric (encoders)."""

    def __init__(self, config: AlibiConfig | None, dims: ModelDims):
        super().__init__(config, dims)
        config = config or AlibiConfig()
        self.register_buffer("slopes", alibi_slopes(dims.n_heads, config.max_bias), persistent=False)

    def attention_bias(self, q_positions: Positions, k_positions: Positions) -> Tensor:
        """(1, H, Tq, Tk) float32: ``-slope · (q - k)``, or ``-slope · |q - k|`` when not causal.

        With causal attention the keys after a query are masked anyway, so only q ≥ k matters. Ragged
        positions (``rows``) give a (B, H, Tq, Tk) bias, row ``b`` from its own positions.
        """
        if q_positions.is_ragged or k_positions.is_ragged:
            q_rows = q_positions.per_row().to(self.slopes.device)  # (B or 1, Tq)
            k_rows = k_positions.per_row().to(self.slopes.device)  # (B or 1, Tk)
            distance = (q_rows.unsqueeze(2) - k_rows.unsqueeze(1)).float()  # (B, Tq, Tk)
            if not self.dims.causal:
                distance = distance.abs()
            return -self.slopes[None, :, None, None] * distance.unsqueeze(1)
        q = q_positions.tensor.to(self.slopes.device)
        k = k_positions.tensor.to(self.slopes.device)
        distance = (q.unsqueeze(1) - k.unsqueeze(0)).float()  # (Tq, Tk)
        if not self.dims.causal:
            distance = distance.abs()
        return (-self.slopes[:, None, None] * distance).unsqueeze(0)
