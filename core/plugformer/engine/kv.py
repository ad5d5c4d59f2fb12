"""Paged key/value storage and the ragged batch view a forward pass writes into and reads from.

:class:`PagedKVCache` holds, per layer, one (slots, kv_heads, head_dim) tensor for keys and one for
values, ``slots = num_blocks × block_size``: slot ``b·block_size + i`` is token ``i`` of block ``b``.
The storage is allocated empty, so on CPU the operating system commits its pages only as tokens are
written: memory held follows the tokens in flight. :class:`PagedBatch` is one forward pass's
:class:`~plugformer.interfaces.RaggedBatch`: each layer scatters the new keys and values to their
slots, then gathers every row's keys (B, Hkv, max_kv, D) through its block table, a whole block at a
time; positions past a row's length hold finite values (zeroed blocks or older keys) that the
attention mask hides.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from plugformer.engine.blocks import NULL_BLOCK
from plugformer.interfaces import Positions, RaggedBatch


class PagedKVCache:
    """The keys and values of every layer of one model, in the block pool's slots."""

    def __init__(self, n_layers: int, n_kv_heads: int, head_dim: int, num_blocks: int, block_size: int,
                 device: torch.device, dtype: torch.dtype):
        self.block_size, self.dtype, self.device = block_size, dtype, device
        slots = num_blocks * block_size
        self.k = [torch.empty(slots, n_kv_heads, head_dim, device=device, dtype=dtype) for _ in range(n_layers)]
        self.v = [torch.empty(slots, n_kv_heads, head_dim, device=device, dtype=dtype) for _ in range(n_layers)]
        self.written = bytearray(num_blocks)  # blocks whose storage has been zeroed once
        self.prepare([NULL_BLOCK])
        self.bytes_per_token = 2 * n_layers * n_kv_heads * head_dim * self.k[0].element_size()

    def prepare(self, blocks: list[int]) -> None:
        """Zero blocks used for the first time: reads gather whole blocks, and the slots past a row's
        length must hold finite values (masked scores times NaN values would still be NaN). Zeroing on
        first use, not at allocation, keeps the memory the OS commits following the tokens in flight."""
        bs = self.block_size
        for block in blocks:
            if not self.written[block]:
                for store in (*self.k, *self.v):
                    store[block * bs:(block + 1) * bs].zero_()
                self.written[block] = 1

    def copy_block(self, src: int, dst: int) -> None:
        """Copy block ``src``'s keys and values into ``dst`` in every layer (copy-on-write)."""
        bs = self.block_size
        for store in (*self.k, *self.v):
            store[dst * bs:(dst + 1) * bs] = store[src * bs:(src + 1) * bs]


class _LayerView:
    """One layer of a :class:`PagedBatch` (the :class:`~plugformer.interfaces.LayerKV` protocol)."""

    def __init__(self, batch: PagedBatch, layer: int):
        self.batch, self.layer = batch, layer

    def update(self, k: Tensor, v: Tensor, offset: Tensor) -> tuple[Tensor, Tensor]:
        batch, cache = self.batch, self.batch.cache
        B, Hkv, T, D = k.shape
        new_k = k.transpose(1, 2).reshape(B * T, Hkv, D)
        new_v = v.transpose(1, 2).reshape(B * T, Hkv, D)
        if batch.real is not None:
            new_k, new_v = new_k.index_select(0, batch.real), new_v.index_select(0, batch.real)
        store_k, store_v = cache.k[self.layer], cache.v[self.layer]
        store_k.index_copy_(0, batch.write_slots, new_k.to(store_k.dtype))
        store_v.index_copy_(0, batch.write_slots, new_v.to(store_v.dtype))
        bs, width = cache.block_size, batch.width
        keys = store_k.view(-1, bs, Hkv, D).index_select(0, batch.read_blocks).view(B, width * bs, Hkv, D)
        values = store_v.view(-1, bs, Hkv, D).index_select(0, batch.read_blocks).view(B, width * bs, Hkv, D)
        keys, values = keys[:, :batch.max_kv].transpose(1, 2), values[:, :batch.max_kv].transpose(1, 2)
        return keys.to(k.dtype), values.to(v.dtype)


class PagedBatch(RaggedBatch):
    """One forward pass over rows at their own positions: row ``b`` computes ``q_lengths[b]`` new tokens
    after ``q_offsets[b]`` cached ones, its tokens living in ``block_tables[b]``.

    Built from host lists (the scheduler's bookkeeping), so index tensors are made once per pass and
    shared by every layer.
    """

    def __init__(self, cache: PagedKVCache, block_tables: Sequence[Sequence[int]], q_offsets: Sequence[int],
                 q_lengths: Sequence[int]):
        self.cache = cache
        device, bs = cache.device, cache.block_size
        B, T = len(q_offsets), max(q_lengths)
        kv = [o + n for o, n in zip(q_offsets, q_lengths)]
        self.max_kv = max(kv)
        self.q_lengths = list(q_lengths)
        self.q_offsets = torch.tensor(list(q_offsets), device=device)
        self.kv_lengths = torch.tensor(kv, device=device)
        width = -(-self.max_kv // bs)
        table = torch.tensor([list(t[:width]) + [NULL_BLOCK] * (width - len(t[:width])) for t in block_tables],
                             device=device)
        self.width, self.read_blocks = width, table.reshape(-1)  # reads gather whole blocks
        slots = (table.unsqueeze(-1) * bs + torch.arange(bs, device=device)).view(B, width * bs)
        steps = torch.arange(T, device=device)
        real = steps.unsqueeze(0) < torch.tensor(self.q_lengths, device=device).unsqueeze(1)
        first = self.q_offsets.unsqueeze(1)
        rows = torch.where(real, first + steps, first)  # (B, T) positions; padding repeats the row's first
        self.write_slots = slots.gather(1, rows)[real]
        self.real = None if all(n == T for n in q_lengths) else real.reshape(-1).nonzero().squeeze(1)
        self.positions = Positions.ragged(rows, min(q_offsets), self.max_kv)
        self.layers = [_LayerView(self, i) for i in range(len(cache.k))]

    def last_token_index(self) -> Tensor:
        """Flat (B·T) indices of each row's last real token: where its next-token logits come from."""
        T = max(self.q_lengths)
        return torch.tensor([b * T + n - 1 for b, n in enumerate(self.q_lengths)], device=self.cache.device)


__all__ = ["PagedBatch", "PagedKVCache"]
