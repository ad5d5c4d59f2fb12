"""Contrastive training data: records ``{"query", "positive"[, "negative"]}`` → token rows with masks →
:class:`~plugformer.interfaces.PairBatch` by step, for objectives declaring ``batches: ["pairs"]``.

Each text is its own row: its tokens, cut to ``seq_len``, with no end-of-text token added, right-padded
(:func:`pad_texts`, the layout :func:`plugformer.retrieval.pooled_embeddings` pools). An embedder that pools a
model trained here should tokenize texts the same way.
"""
from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from plugformer.build import build
from plugformer.errors import ConfigError
from plugformer.interfaces import PairBatch, ParallelStrategy, TextSource, Tokenizer
from plugformer.registry import Registries

#: the keys of a pair record; ``negative`` is optional (a hard negative for the query)
PAIR_KEYS = ("query", "positive", "negative")


def pair_texts(record: dict[str, Any], where: str = "record") -> tuple[str, str, str | None]:
    """(query, positive, negative or None) of a pair record, or a one-line error naming what is wrong."""
    if not isinstance(record, dict) or not {"query", "positive"} <= record.keys():
        keys = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise ConfigError(f"{where} has keys {keys}; objective=contrastive needs records with query and positive "
                          "(and optionally negative): data=stdlib_pairs, or data=jsonl data.path=<pairs.jsonl>")
    texts = []
    for key in PAIR_KEYS:
        value = record.get(key)
        if value is None and key == "negative":
            texts.append(None)
            continue
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{where}: {key!r} must be a non-empty string, got {value!r}")
        texts.append(value)
    return texts[0], texts[1], texts[2]


def pad_texts(rows: Sequence[Sequence[int]], max_tokens: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists → right-padded (B, T) int64 rows cut to ``max_tokens`` and their (B, T) bool mask (True: a
    real token), ``T`` the longest row kept. An empty row is an error (an empty text has no embedding)."""
    if any(len(r) == 0 for r in rows):
        raise ConfigError("cannot embed an empty text: a row has no tokens")
    width = min(max_tokens, max(len(r) for r in rows))
    tokens = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, r in enumerate(rows):
        n = min(width, len(r))
        tokens[i, :n] = torch.tensor(list(r[:n]), dtype=torch.long)
        mask[i, :n] = True
    return tokens, mask


def check_pair_source(source: TextSource) -> None:
    """Refuse, in one line, a data source that has no records to draw pairs from."""
    if not getattr(source, "has_records", False):
        raise ConfigError(f"data '{type(source).__name__}' yields plain documents, not records; objective=contrastive "
                          "needs query/positive pairs: data=stdlib_pairs, or data=jsonl data.path=<pairs.jsonl>")


class EncodedPairs:
    """The token ids of a split's pairs (query, positive and, for every record or none, negative)."""

    def __init__(self, records: list[dict[str, Any]], tokenizer: Tokenizer, max_tokens: int, split: str):
        texts = [pair_texts(r, f"{split} record {i}") for i, r in enumerate(records)]
        with_negative = {neg is not None for _, _, neg in texts}
        if len(with_negative) > 1:
            raise ConfigError(f"the {split} split mixes records with and without 'negative': give every record a "
                              "hard negative, or none")
        self.has_negatives = with_negative == {True}
        cut = [[t[:max_tokens * 16] for t in triple if t is not None] for triple in texts]  # bounded encode work
        flat = tokenizer.encode_batch([t for triple in cut for t in triple])
        width = 3 if self.has_negatives else 2
        self.rows = [flat[i:i + width] for i in range(0, len(flat), width)]
        for i, row in enumerate(self.rows):
            for key, ids in zip(PAIR_KEYS, row):
                if not ids:
                    raise ConfigError(f"{split} record {i}: {key!r} encodes to no tokens")

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, indices: Sequence[int], max_tokens: int, pad_id: int) -> PairBatch:
        picked = [self.rows[i] for i in indices]
        parts = [pad_texts([row[j] for row in picked], max_tokens, pad_id)
                 for j in range(3 if self.has_negatives else 2)]
        negative = parts[2] if self.has_negatives else (None, None)
        return PairBatch(*parts[0], *parts[1], *negative)


class PairData:
    """Serves :class:`PairBatch` es by step, the way :class:`~plugformer.training.data.TrainingData` serves
    windows (a :class:`plugformer.interfaces.Batches`).

    Records come from ``source.records(split)``; rows are drawn epoch by epoch from a permutation seeded by
    ``(seed, epoch)``, so the batch of step ``s`` depends only on ``(seed, s)`` (exact resume). Texts are cut to
    ``seq_len`` tokens. Evaluation uses fixed batches from the start of the held-out split.
    """

    def __init__(self, source: TextSource, tokenizer: Tokenizer, *, seq_len: int, batch_size: int,
                 eval_batches: int, seed: int, dp_rank: int = 0):
        check_pair_source(source)
        self.source, self.tokenizer, self.seq_len = source, tokenizer, seq_len
        self.batch_size, self.eval_batches, self.seed, self.dp_rank = batch_size, eval_batches, seed, dp_rank
        self.pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.eos_id
        self.train = self._encode("train")
        self.val = self._encode("val")

    @classmethod
    def from_config(cls, cfg: DictConfig, registries: Registries, strategy: ParallelStrategy,
                    resume_from: Path | None) -> PairData:
        """The pairs of ``cfg.data`` for a ``train`` run: the tokenizer is fitted on the source's documents (each
        record's texts) like a pretraining run's, or loaded from the checkpoint being resumed."""
        from plugformer.training.data import run_tokenizer

        source = build(registries, "data", cfg.data)
        check_pair_source(source)  # before fitting a tokenizer on it
        tokenizer = None
        for turn in ("main", "others"):  # the main rank fits (and caches) the tokenizer first
            if strategy.is_main == (turn == "main"):
                tokenizer = run_tokenizer(cfg, registries, source, resume_from, cfg.data.get("cache_dir"))
            strategy.barrier()
        return cls(source, tokenizer, seq_len=cfg.data.seq_len, batch_size=cfg.trainer.batch_size,
                   eval_batches=cfg.trainer.eval_batches, seed=cfg.seed, dp_rank=strategy.dp_rank)

    def _encode(self, split: str) -> EncodedPairs:
        records = list(self.source.records(split))
        if not records:
            raise ConfigError(f"the {split} split of data '{type(self.source).__name__}' has no records")
        return EncodedPairs(records, self.tokenizer, self.seq_len, split)

    def _order(self, epoch: int) -> list[int]:
        order = list(range(len(self.train)))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order

    def train_batch(self, step: int, rows_per_rank: int) -> PairBatch:
        """This rank's rows of the global batch of ``step`` (1-based)."""
        n = len(self.train)
        first = (step - 1) * self.batch_size + self.dp_rank * rows_per_rank
        orders: dict[int, list[int]] = {}
        picked = []
        for i in range(first, first + rows_per_rank):
            epoch = i // n
            if epoch not in orders:
                orders[epoch] = self._order(epoch)
            picked.append(orders[epoch][i % n])
        return self.train.batch(picked, self.seq_len, self.pad_id)

    def val_batches(self, rows_per_rank: int) -> Iterator[PairBatch]:
        """Fixed batches from the start of the held-out split (at most ``eval_batches``)."""
        for b in range(self.eval_batches):
            start = b * self.batch_size + self.dp_rank * rows_per_rank
            indices = list(range(start, min(start + rows_per_rank, len(self.val))))
            if not indices:
                return
            yield self.val.batch(indices, self.seq_len, self.pad_id)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """The objective's loss and in-batch accuracy on the held-out batches are the scores."""
        return {}


__all__ = ["PAIR_KEYS", "EncodedPairs", "PairData", "check_pair_source", "pad_texts", "pair_texts"]
