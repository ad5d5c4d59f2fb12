"""Config schemas of the built-in attention backends (torch-free, so configs compose without torch).

``window`` turns a backend into sliding-window (local) attention: a query sees itself and the
``window - 1`` keys before it (and after it, when attention is bidirectional). None is global.
"""
from dataclasses import dataclass
from enum import Enum
from typing import Optional


class AttentionFallback(str, Enum):
    """What the ``xformers`` backend may run instead when xformers cannot run here."""

    sdpa = "sdpa"  # torch.nn.functional.scaled_dot_product_attention, same contract and results


@dataclass
class NaiveAttentionConfig:
    """The reference backend always computes scores and softmax in float32; only the window is set."""

    window: Optional[int] = None  # sliding-window size in keys (itself included); None = global


@dataclass
class SdpaAttentionConfig:
    """PyTorch picks the fused kernel itself; a window is passed to it as an explicit mask."""

    window: Optional[int] = None  # sliding-window size in keys (itself included); None = global


@dataclass
class XformersAttentionConfig:
    """xformers' memory-efficient kernels; ``fallback: sdpa`` runs torch SDPA where xformers cannot."""

    window: Optional[int] = None  # sliding-window size in keys (itself included); None = global
    fallback: Optional[AttentionFallback] = None  # None: refuse to build when xformers is unavailable
