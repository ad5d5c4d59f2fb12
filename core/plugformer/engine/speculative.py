"""Speculative decoding with a draft model: the draft proposes ``k`` tokens per row, the target model
checks all of them in one forward pass and keeps the longest prefix it agrees with, plus its own next
token. For greedy requests the output is exactly the target model's own greedy output; the speed-up
depends on how often the draft is right (:attr:`Speculator.acceptance_rate`).

Both models keep their keys and values in the same blocks (each has its own storage per slot), so
the scheduler's block tables, the prefix cache and preemption serve both. The draft may lag the
target by one token (when every proposal was accepted, the last one's keys were never computed by
the draft); the next round computes that token first.
"""
from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

from plugformer.engine.kv import PagedBatch, PagedKVCache
from plugformer.engine.sequence import Sequence
from plugformer.precision import autocast


class Speculator:
    """A draft model and its KV storage; :meth:`prefill` mirrors the target's prompt chunks,
    :meth:`propose` drafts ``k`` tokens per row, :meth:`verify` accepts what the target agrees with."""

    def __init__(self, draft: nn.Module, cache: PagedKVCache, k: int, device: torch.device, precision: str):
        self.draft, self.cache, self.k, self.device, self.precision = draft.eval(), cache, k, device, precision
        self.proposed = self.accepted = 0

    @property
    def acceptance_rate(self) -> float:
        """Accepted draft tokens / proposed draft tokens so far."""
        return self.accepted / self.proposed if self.proposed else 0.0

    def _run(self, model: nn.Module, cache: PagedKVCache, rows: list[tuple[Sequence, list[int], int]],
             route: contextlib.AbstractContextManager, all_logits: bool = False) -> Tensor:
        """Forward ``(seq, token ids, offset)`` rows; last-token logits (B, V), or all (B, T, V)."""
        width = max(len(ids) for _, ids, _ in rows)
        tokens = torch.tensor([ids + [0] * (width - len(ids)) for _, ids, _ in rows], device=self.device)
        batch = PagedBatch(cache, [s.blocks for s, _, _ in rows], [o for _, _, o in rows],
                           [len(ids) for _, ids, _ in rows])
        with route, autocast(self.device, self.precision):
            if all_logits:
                return model(tokens, cache=batch).float()
            return model(tokens, cache=batch, logits_at=batch.last_token_index()).float()

    @torch.no_grad()
    def prefill(self, rows: list[tuple[Sequence, int]]) -> None:
        """Compute the tokens the target is about to compute (rows' ``num_computed`` not yet advanced),
        after any the draft still lacks, so both caches hold the same tokens."""
        self._run(self.draft, self.cache, [(s, s.tokens[s.draft_computed:s.num_computed + n], s.draft_computed)
                                           for s, n in rows], contextlib.nullcontext())
        for seq, n in rows:
            seq.draft_computed = seq.num_computed + n

    @torch.no_grad()
    def propose(self, seqs: list[Sequence], k: int) -> list[list[int]]:
        """``k`` greedy draft tokens after each row's last token."""
        rows = [(s, s.tokens[s.draft_computed:], s.draft_computed) for s in seqs]
        drafts = [[t] for t in self._run(self.draft, self.cache, rows, contextlib.nullcontext()).argmax(-1).tolist()]
        for seq in seqs:
            seq.draft_computed = len(seq.tokens)
        for j in range(1, k):
            rows = [(s, [d[-1]], len(s.tokens) + j - 1) for s, d in zip(seqs, drafts)]
            picks = self._run(self.draft, self.cache, rows, contextlib.nullcontext()).argmax(-1).tolist()
            for d, t in zip(drafts, picks):
                d.append(t)
        return drafts

    @torch.no_grad()
    def verify(self, target: nn.Module, target_cache: PagedKVCache, seqs: list[Sequence], drafts: list[list[int]],
               route: contextlib.AbstractContextManager) -> list[list[int]]:
        """The tokens each row gains: the drafts the target's greedy choice agrees with, then the
        target's own next token. Advances both caches' computed counts."""
        rows = [(s, [s.tokens[-1]] + d, s.num_computed) for s, d in zip(seqs, drafts)]
        choices = self._run(target, target_cache, rows, route, all_logits=True).argmax(-1).tolist()
        gains = []
        for seq, draft, target_says in zip(seqs, drafts, choices):
            m = 0
            while m < len(draft) and draft[m] == target_says[m]:
                m += 1
            self.proposed += len(draft)
            self.accepted += m
            start = len(seq.tokens)
            seq.num_computed = start + m  # the last token and the accepted drafts are now cached
            seq.draft_computed = min(start + len(draft) - 1, start + m)
            gains.append(draft[:m] + [target_says[m]])
        return gains


def eligible(seq: Sequence) -> bool:
    """Rows speculation serves exactly: greedy, no penalties, no structured output, no logprobs."""
    p = seq.params
    return p.greedy and not p.penalised and seq.matcher is None and seq.logprobs is None


__all__ = ["Speculator", "eligible"]
