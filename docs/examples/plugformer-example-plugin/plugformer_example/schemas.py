"""Config schemas (torch-free, so configs compose without importing model code). Each field is a
config key: ``attention.chunk_size=32``, ``attention.softcap=30``, ``position.num_buckets=16``."""
from __future__ import annotations

from dataclasses import dataclass

from plugformer.config import bounded  # every numeric field declares its valid range (checked at compose time)


@dataclass
class ChunkedAttentionConfig:
    chunk_size: int = bounded(64, ge=1)  # keys per block; memory per step is (B, H, Tq, chunk_size)
    softcap: float | None = bounded(None, gt=0)  # None: plain attention; c: scores → c·tanh(scores / c) (Gemma 2 uses 50)


@dataclass
class T5BiasConfig:
    num_buckets: int = bounded(32, ge=2)  # distance buckets (halved per direction when attention is bidirectional)
    max_distance: int = bounded(128, ge=1)  # distances at or beyond this share the last bucket
