"""Text sources: where training and validation documents come from."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

SPLITS = ("train", "val")


class DocumentPart(str):
    """A piece of a long document that continues in the next item :meth:`TextSource.documents` yields: the
    token pipeline adds no end-of-document token after it. A source streams a file of any size this way,
    in pieces of bounded size (cut after a line break), instead of holding it in memory whole."""

    __slots__ = ()


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
        """Yield the documents of ``split`` (one of :data:`SPLITS`). A long document may be yielded in pieces:
        every piece but its last as a :class:`DocumentPart`."""

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
