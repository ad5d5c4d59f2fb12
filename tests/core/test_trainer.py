"""The training loop's arithmetic: gradient accumulation and the data-parallel split don't change what
a step computes, and the metrics file reads like one uninterrupted run."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from plugformer import ConfigError
from plugformer.build import build
from plugformer.training import Trainer


def _trainer(builtin_host, tiny_config, tmp_path: Path, *overrides: str) -> Trainer:
    cfg = tiny_config("tokenizer=byte", "data.max_bytes=200000", f"data.cache_dir={tmp_path / 'cache'}",
                      "model.dropout=0.0", *overrides)
    strategy = build(builtin_host.registries, "parallel", cfg.parallel)
    return Trainer(cfg, tmp_path / "run", builtin_host, strategy, strategy.setup("cpu"))


def test_gradient_accumulation_matches_one_big_batch(builtin_host, tiny_config, tmp_path):
    whole = _trainer(builtin_host, tiny_config, tmp_path, "trainer.batch_size=4", "trainer.grad_accum=1")
    split = _trainer(builtin_host, tiny_config, tmp_path, "trainer.batch_size=4", "trainer.grad_accum=2")
    split.model.load_state_dict(whole.model.state_dict())
    for step in (1, 2, 3):
        whole.step = split.step = step
        a, b = whole.train_step(), split.train_step()
        assert torch.allclose(a, b, atol=1e-5), (step, a, b)
    for p, q in zip(whole.model.parameters(), split.model.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-5)


def test_batch_size_must_split_evenly_across_ranks_and_micro_batches(builtin_host, tiny_config, tmp_path):
    with pytest.raises(ConfigError, match="trainer.batch_size=3"):
        _trainer(builtin_host, tiny_config, tmp_path, "trainer.batch_size=3", "trainer.grad_accum=2")
