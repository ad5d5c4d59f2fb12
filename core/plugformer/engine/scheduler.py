"""Continuous batching: which sequences compute what in the next engine step.

Every step, finished sequences have already left; then, first come first served:

1. every running sequence that is decoding gets room for its next token; when the pool has no free
   block, the most recently admitted running sequence is *preempted*: its blocks go back (its full
   blocks stay in the prefix cache) and it waits at the head of the queue to be recomputed later;
2. sequences still prefilling their prompt continue, ``max_prefill_tokens`` tokens per step shared
   by all prefills, so a long prompt is computed in chunks between everyone's decode steps;
3. waiting sequences are admitted while there are batch rows, prefill budget and blocks for their
   first chunk (admission control); on admission, the full blocks of their prompt already in the
   prefix cache are shared instead of computed.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from plugformer.engine.blocks import BlockPool, block_keys
from plugformer.engine.kv import PagedKVCache
from plugformer.engine.sequence import Sequence


class QueueFull(RuntimeError):
    """The waiting queue holds ``max_waiting`` sequences: the caller should retry later (HTTP 429)."""


@dataclass
class Plan:
    """One step's work: sequences decoding one token, prefill chunks (sequence, token count), and the
    sequences preempted to make room."""

    decode: list[Sequence] = field(default_factory=list)
    prefill: list[tuple[Sequence, int]] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.decode or self.prefill)


class Scheduler:
    """The waiting queue, the running set and the block pool they share."""

    def __init__(self, pool: BlockPool, caches: list[PagedKVCache], *, max_batch: int, max_prefill_tokens: int,
                 max_waiting: int, prefix_caching: bool = True, lookahead: int = 0):
        self.pool, self.caches = pool, caches
        self.max_batch, self.max_prefill_tokens, self.max_waiting = max_batch, max_prefill_tokens, max_waiting
        self.prefix_caching = prefix_caching
        self.lookahead = lookahead  # extra slots a decoding row needs per step (speculative drafts)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    @property
    def block_size(self) -> int:
        return self.pool.block_size

    def add(self, sequences: list[Sequence]) -> None:
        if len(self.waiting) + len(sequences) > self.max_waiting:
            raise QueueFull(f"the engine's waiting queue is full ({self.max_waiting} sequences waiting)")
        self.waiting.extend(sequences)

    def remove_finished(self) -> list[Sequence]:
        """Take finished (or aborted) sequences out of the running set and the queue; free their blocks."""
        done = [s for s in self.running if s.finished] + [s for s in self.waiting if s.finished]
        if done:
            self.running = [s for s in self.running if not s.finished]
            self.waiting = deque(s for s in self.waiting if not s.finished)
            for seq in done:
                self.free(seq)
        return done

    def free(self, seq: Sequence) -> None:
        for block in seq.blocks:
            self.pool.release(block)
        seq.blocks, seq.registered = [], 0

    def schedule(self) -> Plan:
        plan = Plan()
        self._grow_decoders(plan)
        budget = self.max_prefill_tokens
        for seq in [s for s in self.running if not s.prefilled]:
            budget -= self._prefill_chunk(seq, budget, plan)
        while self.waiting and budget > 0 and len(self.running) < self.max_batch:
            seq = self._next_admissible()
            if seq is None or not self._admit(seq, budget, plan):
                break
            budget -= plan.prefill[-1][1]
        return plan

    def _grow_decoders(self, plan: Plan) -> None:
        for seq in list(self.running):
            if seq not in self.running or not seq.prefilled:
                continue
            while not self._reserve(seq, len(seq.tokens) + self.lookahead):
                victim = self.running[-1]
                self._preempt(victim, plan)
                if victim is seq:
                    break
            if seq in self.running:
                plan.decode.append(seq)

    def _reserve(self, seq: Sequence, tokens: int) -> bool:
        """Give ``seq`` blocks for ``tokens`` tokens in all; False (nothing taken) when the pool is short."""
        need = -(-tokens // self.block_size) - len(seq.blocks)
        if need <= 0:
            return True
        if need > self.pool.num_free():
            return False
        fresh = [self.pool.allocate() for _ in range(need)]
        for cache in self.caches:
            cache.prepare(fresh)
        seq.blocks.extend(fresh)
        return True

    def preempt_newest(self, plan: Plan) -> None:
        """Preempt the most recently admitted running sequence (when no one can make progress)."""
        self._preempt(self.running[-1], plan)

    def _preempt(self, seq: Sequence, plan: Plan) -> None:
        self.running.remove(seq)
        if seq in plan.decode:
            plan.decode.remove(seq)
        self.free(seq)
        seq.num_computed = seq.draft_computed = 0
        self.waiting.appendleft(seq)
        plan.preempted.append(seq)
        self.num_preemptions += 1

    def _prefill_chunk(self, seq: Sequence, budget: int, plan: Plan) -> int:
        chunk = min(seq.to_compute, budget)
        while chunk > 0 and not self._reserve(seq, seq.num_computed + chunk):
            chunk = min(chunk - self.block_size, (len(seq.blocks) * self.block_size) - seq.num_computed)
        if chunk <= 0:
            return 0
        plan.prefill.append((seq, chunk))
        return chunk

    def _next_admissible(self) -> Sequence | None:
        for seq in self.waiting:
            if seq.wait_for is None or seq.wait_for.finished or seq.wait_for.prefilled:
                return seq
        return None

    def _admit(self, seq: Sequence, budget: int, plan: Plan) -> bool:
        cached = self._acquire_prefix(seq) if self.prefix_caching else 0
        chunk = min(seq.to_compute, budget)
        if not self._reserve(seq, seq.num_computed + chunk):
            self.free(seq)
            seq.num_computed = seq.draft_computed = 0
            return False
        if seq.num_computed == 0 or cached:
            seq.request.num_cached_tokens = max(seq.request.num_cached_tokens, cached)
        self.waiting.remove(seq)
        self.running.append(seq)
        plan.prefill.append((seq, chunk))
        return True

    def _acquire_prefix(self, seq: Sequence) -> int:
        """Share the cached blocks matching the start of ``seq``'s tokens (all but its last token, which
        must be computed for its logits); returns the number of tokens they cover."""
        full = (len(seq.tokens) - 1) // self.block_size
        for key in block_keys(seq.tokens, self.block_size, full, seq.params.adapter or ""):
            block = self.pool.acquire(key)
            if block is None:
                break
            seq.blocks.append(block)
        seq.registered = len(seq.blocks)
        seq.num_computed = seq.draft_computed = len(seq.blocks) * self.block_size
        return seq.num_computed

    def register_full_blocks(self, seq: Sequence) -> None:
        """Offer ``seq``'s newly completed full blocks to the prefix cache."""
        if not self.prefix_caching:
            return
        computed = min(seq.num_computed, seq.draft_computed) if self.lookahead else seq.num_computed
        full = computed // self.block_size
        if full <= seq.registered:
            return
        keys = block_keys(seq.tokens, self.block_size, full, seq.params.adapter or "")
        for i in range(seq.registered, full):
            self.pool.register(seq.blocks[i], keys[i])
        seq.registered = full


__all__ = ["Plan", "QueueFull", "Scheduler"]
