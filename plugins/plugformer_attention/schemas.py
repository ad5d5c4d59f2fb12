"""Config schemas of the built-in attention backends (torch-free, so configs compose without torch).

Both backends take no options today; the empty dataclasses still give each backend a typed config
section, so options can be added later without changing how configs are written.
"""
from dataclasses import dataclass


@dataclass
class NaiveAttentionConfig:
    """The reference backend has no options: it always computes scores and softmax in float32."""


@dataclass
class SdpaAttentionConfig:
    """PyTorch picks the fused kernel itself; no options yet."""
