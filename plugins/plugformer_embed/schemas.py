"""Config schemas of the ``pooled`` and ``wordllama`` embedders (torch-free)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from plugformer.config import bounded


@dataclass
class PooledConfig:
    # the checkpoint to embed with: a checkpoints/step-N (or last) directory, or a run directory (required)
    checkpoint: str = "???"
    # mean | last (checked when built); None: the pooling the checkpoint was trained with (its
    # objective.pooling, which the contrastive objective records), else mean
    pooling: Optional[str] = None
    # texts per forward pass
    batch_size: int = bounded(32, ge=1, le=65536)
    # tokens kept from the start of each text (prefix included); None: the length the checkpoint was trained on
    # (its data.seq_len), at most the model's max_seq_len
    max_tokens: Optional[int] = bounded(None, ge=1)
    # auto (cuda when visible) | cpu | cuda | cuda:N
    device: str = "auto"
    # instruction prefixes put before queries and passages (empty: both roles embed alike)
    query_prefix: str = ""
    passage_prefix: str = ""


@dataclass
class WordLlamaConfig:
    # the WordLlama model config whose weights ship in the installed wheel
    config: str = "l2_supercat"
    # vector size: a Matryoshka truncation of the packaged weights (64, 128 or 256 for l2_supercat)
    dim: int = bounded(256, ge=1)
    # texts tokenized and pooled together
    batch_size: int = bounded(64, ge=1, le=65536)
