"""The data side of a training run: text source → (fitted) tokenizer → cached tokens → batches."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from plugformer.build import build
from plugformer.errors import ConfigError
from plugformer.interfaces import Batches, ParallelStrategy, TextSource, Tokenizer
from plugformer.registry import Registries
from plugformer.tokens import WindowSampler, eval_windows, fit_tokenizer_cached, tokenize_to_cache


def run_tokenizer(cfg: DictConfig, registries: Registries, source: TextSource, resume_from: Path | None,
                  cache_dir: str | None) -> Tokenizer:
    """The tokenizer of a training run: the resumed checkpoint's, or ``cfg.tokenizer`` fitted on ``source``'s
    train split (cached, see :func:`plugformer.tokens.fit_tokenizer_cached`)."""
    if resume_from is not None:
        from plugformer.checkpoint import load_tokenizer

        return load_tokenizer(resume_from, cfg, registries)
    tokenizer = build(registries, "tokenizer", cfg.tokenizer)
    tok_cache = Path(cache_dir) / "tokenizers" if cache_dir else None
    return fit_tokenizer_cached(tokenizer, source, tok_cache)


def objective_batches(registries: Registries, objective: DictConfig) -> list[str]:
    """What the configured objective trains on (its ``batches`` capability): ``["windows"]`` unless it says."""
    return list(registries.objective.get(objective.name).capabilities.get("batches", ["windows"]))


def training_data(cfg: DictConfig, registries: Registries, strategy: ParallelStrategy,
                  resume_from: Path | None) -> Batches:
    """The batches ``cfg``'s objective trains on: token windows of ``cfg.data`` (:class:`TrainingData`), or
    query/positive pairs of its records for objectives declaring ``batches: ["pairs"]`` (``contrastive``)."""
    if "pairs" in objective_batches(registries, cfg.objective):
        from plugformer.training.pairs import PairData

        return PairData.from_config(cfg, registries, strategy, resume_from)
    return TrainingData(cfg, registries, strategy, resume_from)


class TrainingData:
    """Prepares the tokenizer and token files once (main rank first), then serves batches by step (the
    :class:`plugformer.interfaces.Batches` of pretraining: token windows)."""

    def __init__(self, cfg: DictConfig, registries: Registries, strategy: ParallelStrategy,
                 resume_from: Path | None):
        self.seq_len = cfg.data.seq_len
        self.batch_size = cfg.trainer.batch_size
        self.eval_batches = cfg.trainer.eval_batches
        self.strategy = strategy
        cache_dir = cfg.data.get("cache_dir")
        self.source = build(registries, "data", cfg.data)
        # main rank fits and tokenizes first; the others then read its cached files
        for turn in ("main", "others"):
            if strategy.is_main == (turn == "main"):
                self.tokenizer = self._tokenizer(cfg, registries, resume_from, cache_dir)
                self.train_tokens = tokenize_to_cache(self.source, self.tokenizer, "train", cache_dir)
                self.val_tokens = tokenize_to_cache(self.source, self.tokenizer, "val", cache_dir)
            strategy.barrier()
        for split, tokens in (("train", self.train_tokens), ("val", self.val_tokens)):
            if len(tokens) < self.seq_len + 1:  # fail now, not at the first evaluation
                raise ConfigError(f"the {split} split has {len(tokens)} tokens, too few for one window of "
                                  f"data.seq_len={self.seq_len}; use more data or a shorter data.seq_len")
        self.sampler = WindowSampler(self.train_tokens, seed=cfg.seed)

    def _tokenizer(self, cfg: DictConfig, registries: Registries, resume_from: Path | None,
                   cache_dir: str | None) -> Tokenizer:
        return run_tokenizer(cfg, registries, self.source, resume_from, cache_dir)

    def _rows(self, rows_per_rank: int) -> slice:
        start = self.strategy.dp_rank * rows_per_rank
        return slice(start, start + rows_per_rank)

    def train_batch(self, step: int, rows_per_rank: int) -> torch.Tensor:
        """This rank's rows of the global batch of ``step``: (rows_per_rank, seq_len + 1) int64."""
        return self.sampler.batch(step, self.batch_size, self.seq_len, rows=self._rows(rows_per_rank))

    def val_batches(self, rows_per_rank: int) -> Iterator[torch.Tensor]:
        """Fixed windows from the start of the val split (at most ``trainer.eval_batches`` batches)."""
        return eval_windows(self.val_tokens, self.eval_batches, self.batch_size, self.seq_len,
                            rows=self._rows(rows_per_rank))

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Token windows have no scores beyond the objective's loss."""
        return {}
