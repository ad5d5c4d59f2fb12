"""Learned absolute position embeddings, as in GPT-2: one trained vector per position."""
from __future__ import annotations

from torch import Tensor, nn

from plugformer.interfaces import ModelDims, PositionEncoding, Positions
from plugformer_position.schemas import LearnedPositionConfig


class LearnedPosition(PositionEncoding):
    """Adds ``wpe[position]`` to each token embedding; positions must stay below ``max_seq_len``.

    Ragged batches (``positions.rows``) gather each row's own entries of the table."""

    def __init__(self, config: LearnedPositionConfig | None, dims: ModelDims):
        super().__init__(config, dims)
        config = config or LearnedPositionConfig()
        self.wpe = nn.Embedding(dims.max_seq_len, dims.d_model)
        nn.init.normal_(self.wpe.weight, mean=0.0, std=config.init_std)

    def embed(self, x: Tensor, positions: Positions) -> Tensor:
        # a learned table cannot extrapolate; fail with a message instead of a CUDA index assert
        if positions.end > self.wpe.num_embeddings:
            raise ValueError(
                f"learned position embedding: position {positions.end - 1} is beyond model.max_seq_len="
                f"{self.wpe.num_embeddings}; shorten the input or use a position encoding that "
                "extrapolates (rope, sinusoidal)")
        if positions.rows is not None:
            return x + self.wpe(positions.rows).to(x.dtype)
        return x + self.wpe.weight[positions.start:positions.end].to(x.dtype)
