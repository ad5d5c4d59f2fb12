"""Paged key/value storage and the ragged batch view a forward pass writes into and reads from.

:class:`PagedKVCache` holds, per layer, one (slots, kv_heads, head_dim) tensor for keys and one for
values, ``slots = num_blocks × block_size``: slot ``b·block_size + i`` is token ``i`` of block ``b``.
The storage is allocated empty, so on CPU the operating system commits its pages only as tokens are
written: memory held follows the tokens in flight. :class:`PagedBatch` is one forward pass's
:class:`~plugformer.interfaces.RaggedBatch`: each layer scatters the new keys and values to their
slots, then gathers every row's keys (B, Hkv, max_kv, D) through its block table, a whole block at a
time; positions past a row's length hold finite values (zeroed blocks or older keys) that the
attention mask hides.

Decoding rows do not gather: :class:`DecodeBuffers` keeps each decoding sequence's keys and values in a
dense row that persists across steps, and :class:`DecodeBatch` (one decode step, every row computing one
token) writes the new token there in place as well as into the pool, so attention reads a view instead of
a copy of the whole cache per layer per step.
"""
from __future__ import annotations

from collections.abc import Hashable, Sequence

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
        if self.real is None and min(q_offsets) == max(q_offsets):
            self.uniform_offset = q_offsets[0]
        self.positions = Positions.ragged(rows, min(q_offsets), self.max_kv)
        self.layers = [_LayerView(self, i) for i in range(len(cache.k))]

    def last_token_index(self) -> Tensor:
        """Flat (B·T) indices of each row's last real token: where its next-token logits come from."""
        T = max(self.q_lengths)
        return torch.tensor([b * T + n - 1 for b, n in enumerate(self.q_lengths)], device=self.cache.device)


def _capacity(needed: int, limit: int) -> int:
    """The next power of two >= ``needed`` (at least 16), at most ``limit`` (but never below ``needed``)."""
    cap = 16
    while cap < needed:
        cap *= 2
    return max(needed, min(cap, limit))


class DecodeBuffers:
    """Dense per-layer copies of the decoding sequences' keys and values, kept from step to step.

    Reading the paged pool means gathering every row's blocks into a dense (B, Hkv, max_kv, D) tensor in
    every layer at every step: the whole cache copied per generated token, the most expensive operation of
    batched decoding on a CPU (it is bound by memory bandwidth). Decoding rows read from here instead:
    ``k[layer]``/``v[layer]`` are (rows, Hkv, length, D); each step writes the new token's keys and values
    at (row, position) in place, and attention reads ``k[layer][:B, :, :max_kv]``, a view. The pool stays
    the truth (every token is written there too, for the prefix cache and preemption): a row is filled
    from the pool (one gather of that sequence's tokens) when its sequence joins the decode batch, and a
    sequence missing from one decode step loses its row (it was preempted, finished, or decoded by another
    path), so a row never holds keys the pool does not.

    Memory: at most ``max_rows`` × ``max_len`` tokens per layer; capacity grows by doubling as rows and
    lengths grow and is given back (:meth:`clear`) whenever no sequence decodes. The region attention
    reads is zeroed on first use (values past a row's length must be finite), so on a CPU the memory the
    OS commits follows the rows in flight times the longest row: :attr:`bytes_used`.
    """

    def __init__(self, cache: PagedKVCache, max_rows: int, max_len: int):
        self.cache, self.max_rows, self.max_len = cache, max_rows, max_len
        self.n_layers = len(cache.k)
        self.kv_heads, self.head_dim = cache.k[0].shape[1], cache.k[0].shape[2]
        self.clear()

    def clear(self) -> None:
        """Forget every row and give the memory back."""
        self.k: list[Tensor] = []
        self.v: list[Tensor] = []
        self.rows = self.length = 0  # capacity
        self.zeroed_rows = self.zeroed_length = 0  # k[:, :zeroed_rows, :, :zeroed_length] holds finite values
        self.row_of: dict[Hashable, int] = {}
        self.valid: list[int] = []  # per row: tokens of its sequence it holds (positions 0 .. valid-1)

    @property
    def bytes_used(self) -> int:
        """Bytes of the region holding values (zeroed or written), all layers, keys and values."""
        return self.zeroed_rows * self.zeroed_length * self.cache.bytes_per_token

    def place(self, keys: Sequence[Hashable]) -> list[int]:
        """Give each of this step's decoding sequences (``keys``, any hashable identity) one of the rows
        ``0 .. B-1``: a sequence that decoded in the previous step keeps its row when it can, the others
        take the free ones (and will be filled from the pool). Returns the batch order: indices into
        ``keys`` sorted by row, the order the decode pass must use."""
        B = len(keys)
        if B > self.max_rows:
            raise ValueError(f"{B} decoding rows exceed the decode buffers' {self.max_rows}")
        placed: dict[Hashable, int] = {}
        for key in keys:
            row = self.row_of.get(key)
            if row is not None and row < B:
                placed[key] = row
        free = iter(sorted(set(range(B)) - set(placed.values())))
        for key in keys:
            if key not in placed:
                placed[key] = row = next(free)
                if row < len(self.valid):
                    self.valid[row] = 0
        self.row_of = placed
        return sorted(range(B), key=lambda i: placed[keys[i]])

    def reserve(self, rows: int, length: int) -> None:
        """Make ``[:rows, :, :length]`` of every layer exist and hold finite values."""
        if rows > self.rows or length > self.length:
            new_rows, new_length = _capacity(rows, self.max_rows), _capacity(length, self.max_len)
            new_rows, new_length = max(new_rows, self.rows), max(new_length, self.length)
            shape = (new_rows, self.kv_heads, new_length, self.head_dim)
            zr, zl = self.zeroed_rows, self.zeroed_length
            for store in (self.k, self.v):
                for i in range(self.n_layers):
                    grown = torch.empty(shape, device=self.cache.device, dtype=self.cache.dtype)
                    if i < len(store):
                        grown[:zr, :, :zl] = store[i][:zr, :, :zl]
                        store[i] = grown
                    else:
                        store.append(grown)
            self.rows, self.length = new_rows, new_length
            self.valid += [0] * (new_rows - len(self.valid))
        if length > self.zeroed_length:  # zero ahead in steps of 64 positions, not one position per step
            stop = min(self.length, max(length, self.zeroed_length + 64))
            for store in (*self.k, *self.v):
                store[:self.zeroed_rows, :, self.zeroed_length:stop].zero_()
            self.zeroed_length = stop
        if rows > self.zeroed_rows:
            for store in (*self.k, *self.v):
                store[self.zeroed_rows:rows, :, :self.zeroed_length].zero_()
            self.zeroed_rows = rows

    def fill(self, rows: Sequence[int], block_tables: Sequence[Sequence[int]], lengths: Sequence[int]) -> None:
        """Copy from the pool what each row lacks: row ``rows[i]`` must hold ``lengths[i]`` tokens of the
        sequence whose blocks are ``block_tables[i]``."""
        bs, H, L = self.cache.block_size, self.kv_heads, self.length
        slots, targets = [], []
        for row, table, n in zip(rows, block_tables, lengths):
            start = min(self.valid[row], n)
            for pos in range(start, n):
                slots.append(table[pos // bs] * bs + pos % bs)
                targets.append(row * H * L + pos)
            self.valid[row] = n
        if not slots:
            return
        device = self.cache.device
        src = torch.tensor(slots, device=device)
        # flat index of (row, head, position) in a contiguous (rows, H, L, D) buffer, (N, H) like the gather
        dst = (torch.tensor(targets, device=device).unsqueeze(1) + torch.arange(H, device=device) * L).reshape(-1)
        for pool, store in ((self.cache.k, self.k), (self.cache.v, self.v)):
            for i in range(self.n_layers):
                store[i].view(-1, self.head_dim).index_copy_(0, dst, pool[i].index_select(0, src).reshape(-1,
                                                                                                  self.head_dim))


class _DecodeLayerView:
    """One layer of a :class:`DecodeBatch` (the :class:`~plugformer.interfaces.LayerKV` protocol)."""

    def __init__(self, batch: DecodeBatch, layer: int):
        self.batch, self.layer = batch, layer

    def update(self, k: Tensor, v: Tensor, offset: Tensor) -> tuple[Tensor, Tensor]:
        batch, buffers = self.batch, self.batch.buffers
        B, Hkv, _, D = k.shape
        store_k, store_v = buffers.cache.k[self.layer], buffers.cache.v[self.layer]
        new_k, new_v = k.reshape(B, Hkv, D).to(store_k.dtype), v.reshape(B, Hkv, D).to(store_v.dtype)
        store_k.index_copy_(0, batch.write_slots, new_k)
        store_v.index_copy_(0, batch.write_slots, new_v)
        dense_k, dense_v = buffers.k[self.layer], buffers.v[self.layer]
        dense_k.view(-1, D).index_copy_(0, batch.dense_slots, new_k.reshape(B * Hkv, D))
        dense_v.view(-1, D).index_copy_(0, batch.dense_slots, new_v.reshape(B * Hkv, D))
        keys, values = dense_k[:B, :, :batch.max_kv], dense_v[:B, :, :batch.max_kv]
        return keys.to(k.dtype), values.to(v.dtype)


class DecodeBatch(RaggedBatch):
    """One decode step: row ``b`` computes one token at position ``q_offsets[b]`` (after that many cached
    ones), reading its keys from row ``b`` of :class:`DecodeBuffers` (the rows must be in the order
    :meth:`DecodeBuffers.place` returned) and writing the new ones there and into ``block_tables[b]``."""

    def __init__(self, buffers: DecodeBuffers, block_tables: Sequence[Sequence[int]], q_offsets: Sequence[int]):
        self.buffers = buffers
        cache = buffers.cache
        device, bs = cache.device, cache.block_size
        B = len(q_offsets)
        offsets = list(q_offsets)
        self.q_lengths = [1] * B
        self.max_kv = max(offsets) + 1
        buffers.reserve(B, self.max_kv)
        buffers.fill(range(B), block_tables, offsets)
        for row in range(B):
            buffers.valid[row] = offsets[row] + 1  # after this pass
        self.q_offsets = torch.tensor(offsets, device=device)
        self.kv_lengths = self.q_offsets + 1
        self.write_slots = torch.tensor([t[o // bs] * bs + o % bs for t, o in zip(block_tables, offsets)],
                                        device=device)
        H, L = buffers.kv_heads, buffers.length
        rows = torch.arange(B, device=device).unsqueeze(1)
        self.dense_slots = ((rows * H + torch.arange(H, device=device)) * L + self.q_offsets.unsqueeze(1)).reshape(-1)
        self.positions = Positions.ragged(self.q_offsets.unsqueeze(1), min(offsets), self.max_kv)
        self.layers = [_DecodeLayerView(self, i) for i in range(buffers.n_layers)]
        if min(offsets) == self.max_kv - 1:  # every row at the same position
            self.uniform_offset = self.max_kv - 1

    def last_token_index(self) -> Tensor:
        """Every row's one token: indices ``0 .. B-1``."""
        return torch.arange(len(self.q_lengths), device=self.buffers.cache.device)


__all__ = ["DecodeBatch", "DecodeBuffers", "PagedBatch", "PagedKVCache"]
