"""NoPE: no positional encoding at all (Kazemnejad et al., 2023).

A causal decoder can infer positions from the mask alone, so "no encoding" is a real option rather
than a mistake. :class:`PositionEncoding`'s defaults already do nothing; this subclass only gives the
choice its own name in listings and error messages.
"""
from __future__ import annotations

from plugformer.interfaces import ModelDims, PositionEncoding


class NoPosition(PositionEncoding):
    """Leaves embeddings, queries, keys and scores untouched; no parameters, no buffers."""

    def __init__(self, config: None, dims: ModelDims):
        super().__init__(config, dims)
