"""Fixtures the engine's tests share: a random tiny byte-level model of a small context."""
from __future__ import annotations

import pytest
import torch

from plugformer_text.byte_tokenizer import ByteTokenizer

#: the tiny engine models' context (tests/core/test_engine.py, test_decode_buffers.py)
CONTEXT = 96


@pytest.fixture
def tiny_model(builtin_host, tiny_config):
    """A random tiny model over bytes (a large init spreads the logits, so greedy picks are clear-cut)."""

    def make(position: str = "learned", attention: str = "sdpa", **model):
        cfg = tiny_config(f"position={position}").copy()
        cfg.attention.name = attention
        cfg.model.max_seq_len = CONTEXT
        cfg.model.init_std = 0.3
        for key, value in model.items():
            cfg.model[key] = value
        torch.manual_seed(0)
        from plugformer.model import build_model

        tokenizer = ByteTokenizer(None)
        return build_model(cfg, builtin_host.registries, tokenizer.vocab_size), tokenizer

    return make
