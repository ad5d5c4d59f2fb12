"""Every built-in attention backend × position encoding, through ``Transformer.forward`` with a
:class:`~plugformer.interfaces.RaggedBatch` cache (plugin API 1.1): sequences of different lengths
prefilled and decoded together, each row at its own position, give each sequence the logits it gets
alone. The cache here is the simplest one that honours the protocol (contiguous per-row storage, right
padding); the inference engine's paged cache plays the same role."""
from __future__ import annotations

import pytest
import torch

from plugformer.interfaces import Positions, RaggedBatch
from plugformer.model import build_model

VOCAB = 64


class RowStore:
    """One layer's keys and values, row ``b`` holding its tokens at positions ``0 .. kv_lengths[b]-1``."""

    def __init__(self, batch: int, kv_heads: int, capacity: int, head_dim: int):
        self.k = torch.zeros(batch, kv_heads, capacity, head_dim)
        self.v = torch.zeros(batch, kv_heads, capacity, head_dim)
        self.max_kv = 0

    def update(self, k: torch.Tensor, v: torch.Tensor, offset: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for row, start in enumerate(offset.tolist()):  # padding tokens land after the row's real keys
            self.k[row, :, start:start + k.shape[2]] = k[row]
            self.v[row, :, start:start + v.shape[2]] = v[row]
        return self.k[:, :, :self.max_kv], self.v[:, :, :self.max_kv]


class Batch(RaggedBatch):
    """One forward pass: row ``b`` brings ``q_lengths[b]`` new tokens after ``q_offsets[b]`` cached ones."""

    def __init__(self, stores: list[RowStore], q_offsets: list[int], q_lengths: list[int], width: int):
        self.q_offsets = torch.tensor(q_offsets)
        self.kv_lengths = self.q_offsets + torch.tensor(q_lengths)
        self.max_kv = int(self.kv_lengths.max())
        rows = self.q_offsets[:, None] + torch.arange(width)
        rows = torch.minimum(rows, (self.kv_lengths - 1).clamp_min(0)[:, None])  # padding: the row's last position
        self.positions = Positions.ragged(rows, int(rows.min()), int(rows.max()) + 1)
        for store in stores:
            store.max_kv = self.max_kv
        self.layers = stores


def padded(seqs: list[list[int]]) -> torch.Tensor:
    width = max(len(s) for s in seqs)
    return torch.tensor([s + [0] * (width - len(s)) for s in seqs])


@pytest.fixture
def model_with(builtin_host, tiny_config):
    def make(attention: str, position: str):
        cfg = tiny_config(f"position={position}").copy()
        cfg.attention.name = attention
        cfg.model.n_kv_heads = 2
        torch.manual_seed(0)
        return build_model(cfg, builtin_host.registries, vocab_size=VOCAB).eval()

    return make


@pytest.mark.parametrize("attention", ["naive", "sdpa"])
@pytest.mark.parametrize("position", ["learned", "sinusoidal", "rope", "alibi", "none"])
def test_ragged_prefill_and_decode_equal_each_sequence_alone(model_with, attention, position):
    model = model_with(attention, position)
    g = torch.Generator().manual_seed(1)
    seqs = [torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in (5, 2, 7)]
    dims = model.dims
    stores = [RowStore(3, dims.n_kv_heads, 16, dims.head_dim) for _ in model.blocks]
    with torch.no_grad():
        # prefill every prompt at once: rows of 5, 2 and 7 real tokens
        logits = model(padded(seqs), cache=Batch(stores, [0, 0, 0], [len(s) for s in seqs], 7))
        for row, seq in enumerate(seqs):
            torch.testing.assert_close(logits[row, :len(seq)], model(torch.tensor([seq]))[0], atol=1e-4, rtol=1e-4)
        # then steps where rows bring different numbers of tokens (one row continues with a chunk of 3)
        for new in ([[3], [9], [1]], [[4, 5, 6], [10], [2]], [[7], [11], [8]]):
            lengths = [len(s) for s in seqs]
            step = model(padded(new), cache=Batch(stores, lengths, [len(n) for n in new], max(len(n) for n in new)))
            seqs = [s + n for s, n in zip(seqs, new)]
            for row, (seq, n) in enumerate(zip(seqs, new)):
                alone = model(torch.tensor([seq]))[0, -len(n):]
                torch.testing.assert_close(step[row, :len(n)], alone, atol=1e-4, rtol=1e-4)
                assert torch.isfinite(step[row]).all()  # padding positions too


def test_logits_at_picks_one_row_per_sequence(model_with):
    """``logits_at`` (indices into the flattened B·T positions) computes only the rows the engine samples from."""
    model = model_with("sdpa", "rope")
    seqs = [[1, 2, 3], [4, 5]]
    stores = [RowStore(2, model.dims.n_kv_heads, 8, model.dims.head_dim) for _ in model.blocks]
    with torch.no_grad():
        full = model(padded(seqs), cache=Batch(stores, [0, 0], [3, 2], 3))
        stores = [RowStore(2, model.dims.n_kv_heads, 8, model.dims.head_dim) for _ in model.blocks]
        last = model(padded(seqs), cache=Batch(stores, [0, 0], [3, 2], 3), logits_at=torch.tensor([2, 4]))
    torch.testing.assert_close(last, torch.stack([full[0, 2], full[1, 1]]))
