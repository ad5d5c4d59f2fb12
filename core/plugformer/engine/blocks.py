"""The KV-cache block pool: fixed-size blocks handed to sequences, shared through the prefix cache.

Every sequence's keys and values live in blocks of ``block_size`` token slots taken from one pool, so
the memory a batch holds follows the tokens actually in flight. A full block is *registered* under
the hash of its tokens and of everything before them (the hash chain of its prefix, and the adapter
that computed it); a later sequence whose prompt starts with the same tokens *acquires* those blocks
instead of recomputing them. Blocks nobody references stay cached, and the least recently released
one is evicted when a fresh block is needed. Block 0 is never handed out: it holds zeros that padded
reads point at.
"""
from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass

#: the block padded gathers read (zeros; never allocated to a sequence)
NULL_BLOCK = 0


@dataclass(frozen=True)
class BlockKey:
    """What a cached block holds: its tokens after a prefix (``parent``'s chain) under ``namespace``
    (the adapter that computed it; "" for the base model). Equal keys mean equal keys and values."""

    parent: int
    tokens: tuple[int, ...]
    namespace: str = ""

    @property
    def digest(self) -> int:
        """The hash its successor's key chains on."""
        return hash((self.parent, self.tokens, self.namespace))


def block_keys(tokens: Sequence[int], block_size: int, count: int, namespace: str = "") -> list[BlockKey]:
    """The keys of the first ``count`` full blocks of ``tokens``."""
    keys, parent = [], 0
    for i in range(count):
        key = BlockKey(parent, tuple(tokens[i * block_size:(i + 1) * block_size]), namespace)
        keys.append(key)
        parent = key.digest
    return keys


class BlockPool:
    """``num_blocks`` blocks (block 0 reserved) with reference counts and an LRU prefix cache.

    - :meth:`allocate` a fresh block (a never-used one first, else the least recently released cached
      one, whose cache entry is dropped); None when every block is referenced.
    - :meth:`acquire` the cached block holding ``key`` (None on a miss).
    - :meth:`register` a full block under its key once its keys and values are computed.
    - :meth:`release` a reference; at zero a registered block stays cached (evictable), others are free.
    """

    def __init__(self, num_blocks: int, block_size: int):
        if num_blocks < 2:
            raise ValueError(f"the KV cache needs at least 2 blocks, got {num_blocks}")
        self.num_blocks, self.block_size = num_blocks, block_size
        self.refs = [0] * num_blocks
        self.refs[NULL_BLOCK] = 1  # never free
        self.free: deque[int] = deque(range(1, num_blocks))
        self.evictable: OrderedDict[int, None] = OrderedDict()  # cached, unreferenced, oldest first
        self.key_of: dict[int, BlockKey] = {}
        self.block_of: dict[BlockKey, int] = {}
        self.hits = self.queries = 0

    @property
    def capacity(self) -> int:
        """Blocks a sequence can ever get (all but the reserved one)."""
        return self.num_blocks - 1

    def num_free(self) -> int:
        """Blocks :meth:`allocate` can hand out now (free plus evictable cached ones)."""
        return len(self.free) + len(self.evictable)

    def num_used(self) -> int:
        """Blocks referenced by at least one sequence."""
        return self.capacity - self.num_free()

    def usage(self) -> float:
        """Fraction of the pool referenced by sequences (0..1)."""
        return self.num_used() / self.capacity

    def allocate(self) -> int | None:
        if self.free:
            block = self.free.popleft()
        elif self.evictable:
            block, _ = self.evictable.popitem(last=False)
            del self.block_of[self.key_of.pop(block)]
        else:
            return None
        self.refs[block] = 1
        return block

    def acquire(self, key: BlockKey) -> int | None:
        self.queries += 1
        block = self.block_of.get(key)
        if block is None:
            return None
        self.hits += 1
        if self.refs[block] == 0:
            del self.evictable[block]
        self.refs[block] += 1
        return block

    def register(self, block: int, key: BlockKey) -> None:
        """Record that ``block`` (full, computed) holds ``key``; a key already cached elsewhere keeps
        that block (this one stays private to its sequence)."""
        if key in self.block_of or block in self.key_of:
            return
        self.block_of[key] = block
        self.key_of[block] = key

    def release(self, block: int) -> None:
        self.refs[block] -= 1
        if self.refs[block] == 0:
            if block in self.key_of:
                self.evictable[block] = None
            else:
                self.free.append(block)

    def reset_prefix_cache(self) -> None:
        """Forget every cached block nobody references (e.g. after weights changed)."""
        for block in list(self.evictable):
            del self.block_of[self.key_of.pop(block)]
            self.free.append(block)
        self.evictable.clear()


__all__ = ["NULL_BLOCK", "BlockKey", "BlockPool", "block_keys"]
