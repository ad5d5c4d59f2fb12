"""Config schemas of the built-in attention backends (torch-free, so configs compose without torch).

``window`` turns a backend into sliding-window (local) attention: a query sees itself and the
``window - 1`` keys before it (and after it, when attention is bidirectional). None is global.
"""
from dataclasses import dataclass
from enum import Enum
from typing import Optional

from plugformer.config import bounded


def check_window(window: int | None) -> int | None:
    """The validated ``window`` option: None (global attention) or a whole number of keys >= 1.

    Checked when the schema is built (``plugformer validate`` and the start of every command).
    """
    if window is None:
        return None
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"attention.window must be an integer >= 1 (the number of keys a query sees, "
                         f"itself included) or null for global attention, got {window!r}")
    return window


class _Windowed:
    """Validates ``window`` as soon as the config exists."""

    def __post_init__(self) -> None:
        check_window(self.window)


class AttentionFallback(str, Enum):
    """What the ``xformers`` backend may run instead when xformers cannot run here."""

    sdpa = "sdpa"  # torch.nn.functional.scaled_dot_product_attention, same contract and results


@dataclass
class NaiveAttentionConfig(_Windowed):
    """The reference backend always computes scores and softmax in float32; only the window is set."""

    window: Optional[int] = bounded(None, ge=1)  # sliding-window size in keys (itself included); None = global


@dataclass
class SdpaAttentionConfig(_Windowed):
    """PyTorch picks the fused kernel itself; a window is passed to it as an explicit mask."""

    window: Optional[int] = bounded(None, ge=1)  # sliding-window size in keys (itself included); None = global


@dataclass
class XformersAttentionConfig(_Windowed):
    """xformers' memory-efficient kernels; ``fallback: sdpa`` runs torch SDPA where xformers cannot."""

    window: Optional[int] = bounded(None, ge=1)  # sliding-window size in keys (itself included); None = global
    fallback: Optional[AttentionFallback] = None  # None: refuse to build when xformers is unavailable
