"""Text sources: where training and validation documents come from."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

SPLITS = ("train", "val")


class TextSource(ABC):
    """Documents for the ``train`` and ``val`` splits, in a deterministic order.

    Construction: ``Cls(config)``. The core tokenizes the documents once into a cached memory-mapped
    token file keyed by :meth:`fingerprint` and the tokenizer's fingerprint, so :meth:`fingerprint`
    must change whenever the documents would.
    """

    def __init__(self, config: Any):
        self.config = config

    @abstractmethod
    def documents(self, split: str) -> Iterator[str]:
        """Yield the documents of ``split`` (one of :data:`SPLITS`)."""

    @abstractmethod
    def fingerprint(self) -> str:
        """A short stable string identifying the documents (paths, sizes, mtimes, caps)."""

    #: True for sources of structured records (fine-tuning data): they implement :meth:`records`
    has_records: bool = False

    def records(self, split: str) -> Iterator[dict[str, Any]]:
        """Yield the structured records of ``split`` for supervised fine-tuning, one dict each:
        ``{"prompt", "response"}``, chat ``{"messages": [{"role", "content"}, ...]}``, or preference
        pairs ``{"prompt", "chosen", "rejected"}``. Only sources with :attr:`has_records` have them."""
        raise NotImplementedError(f"{type(self).__name__} yields documents, not records")
