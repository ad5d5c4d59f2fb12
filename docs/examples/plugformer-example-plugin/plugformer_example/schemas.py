"""Config schemas (torch-free, so configs compose without importing model code). Each field is a
config key: ``attention.chunk_size=32``, ``attention.softcap=30``, ``position.num_buckets=16``."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ChunkedAttentionConfig:
    chunk_size: int = 64  # keys per block; memory per step is (B, H, Tq, chunk_size)
    softcap: float | None = None  # None: plain attention; c: scores → c·tanh(scores / c) (Gemma 2 uses 50)


@dataclass
class T5BiasConfig:
    num_buckets: int = 32  # distance buckets (halved per direction when attention is bidirectional)
    max_distance: int = 128  # distances at or beyond this share the last bucket
