"""Toy problems for the training families: a tiny regression for optimizers, a tiny language model and
tokenizer for objectives. Kit-local pieces only, so a broken plugin cannot hide inside the fixture."""
from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from plugformer.interfaces import Attention, ModelDims, PositionEncoding, Positions, Tokenizer
from plugformer.model import ModelParts, Transformer


def regression_model(seed: int = 0, device: str = "cpu") -> nn.Module:
    """Embedding → LayerNorm → Linear: matrices, a norm, biases and an embedding (every param-group kind)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Embedding(16, 8), nn.LayerNorm(8), nn.Linear(8, 1)).to(device)


def regression_batch(device: str = "cpu") -> tuple[Tensor, Tensor]:
    """16 token ids and targets the model can fit exactly."""
    g = torch.Generator().manual_seed(1)
    return torch.arange(16, device=device), torch.randn(16, 1, generator=g).to(device)


def regression_loss(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    x, y = batch
    return F.mse_loss(model(x), y)


class ToyTokenizer(Tokenizer):
    """Ids 0-27 are ordinary tokens; 28 is ``<pad>``, 29 ``<mask>``, 30 ``<eos>`` (vocabulary 31)."""

    @property
    def vocab_size(self) -> int:
        return 31

    @property
    def eos_id(self) -> int:
        return 30

    @property
    def mask_id(self) -> int:
        return 29

    @property
    def pad_id(self) -> int:
        return 28

    def encode(self, text: str) -> list[int]:
        return [b % 28 for b in text.encode("utf-8")]

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(str(i) for i in ids)

    def save(self, directory: Path) -> None:
        (Path(directory) / "toy.txt").write_text("toy\n")

    @classmethod
    def load(cls, config: Any, directory: Path) -> ToyTokenizer:
        return cls(config)

    def fingerprint(self) -> str:
        return "toy"


class FormulaAttention(Attention):
    """softmax(q kᵀ/√d + bias) v with the causal rule; enough for a toy model, independent of plugins."""

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool, attn_bias: Tensor | None = None,
                q_offset: int = 0) -> Tensor:
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        if attn_bias is not None:
            scores = scores + attn_bias
        if causal:
            seen = torch.arange(k.shape[2], device=q.device) <= (torch.arange(q.shape[2], device=q.device)[:, None]
                                                                  + q_offset)
            scores = scores.masked_fill(~seen, float("-inf"))
        return torch.softmax(scores, dim=-1) @ v


class LearnedTable(PositionEncoding):
    """Absolute learned positions, so an encoder toy model is not permutation-invariant."""

    def __init__(self, config: Any, dims: ModelDims):
        super().__init__(config, dims)
        self.table = nn.Parameter(torch.zeros(dims.max_seq_len, dims.d_model))

    def embed(self, x: Tensor, positions: Positions) -> Tensor:
        return x + self.table[positions.start:positions.end]


def language_model(vocab_size: int, causal: bool, seed: int = 0, device: str = "cpu") -> Transformer:
    """A one-block, 32-wide core :class:`Transformer` with kit-local parts."""
    torch.manual_seed(seed)
    dims = ModelDims(vocab_size=vocab_size, d_model=32, n_heads=4, n_kv_heads=4, max_seq_len=32, causal=causal)
    parts = ModelParts(attention=lambda d: FormulaAttention(None, d), position=lambda d: LearnedTable(None, d),
                       norm=lambda d: nn.LayerNorm(d.d_model),
                       mlp=lambda d: nn.Sequential(nn.Linear(d.d_model, 64), nn.GELU(), nn.Linear(64, d.d_model)))
    return Transformer(dims, 1, parts).to(device)


def token_batch(vocab: int, device: str = "cpu", batch: int = 4, seq_len: int = 16) -> Tensor:
    """(B, seq_len + 1) int64 ids below ``vocab`` with repeating structure a model can learn."""
    g = torch.Generator().manual_seed(2)
    motif = torch.randint(0, vocab, (batch, 4), generator=g)
    return motif.repeat(1, (seq_len + 1 + 3) // 4)[:, : seq_len + 1].to(device)
