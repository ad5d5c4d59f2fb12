"""Tokenizers: text ↔ token ids, trained on a corpus or loaded from files."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from plugformer.errors import PlugformerError


class Tokenizer(ABC):
    """Turns text into ids and back.

    Construction: ``Cls(config)`` gives an untrained tokenizer; if :attr:`needs_fit`, the core calls
    :meth:`fit` with the training documents before use. ``Cls.load(config, directory)`` restores one
    that :meth:`save` wrote (plain files such as ``tokenizer.json``; never pickle). Documents are joined
    with :attr:`eos_id` between them, and generation stops at it.
    """

    def __init__(self, config: Any):
        self.config = config

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of ids the model's embedding must hold (ids are ``0 .. vocab_size-1``)."""

    @property
    @abstractmethod
    def eos_id(self) -> int:
        """The end-of-document id."""

    @property
    def mask_id(self) -> int | None:
        """The ``<mask>`` id masked-language-model objectives replace tokens with (None: no such token)."""
        return None

    @property
    def pad_id(self) -> int | None:
        """The padding id used to batch sequences of different lengths (None: no such token)."""
        return None

    @property
    def needs_fit(self) -> bool:
        """True while the tokenizer must learn a vocabulary before it can encode."""
        return False

    def fit(self, texts: Iterable[str]) -> None:
        """Learn a vocabulary from ``texts``. Tokenizers with a fixed vocabulary need not override."""

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Ids for ``text``, without special tokens."""

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Ids for many texts; override when the backend batches faster."""
        return [self.encode(t) for t in texts]

    @abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """Text for ``ids``; special tokens are dropped."""

    def token_bytes(self) -> list[bytes]:
        """The bytes each id adds to decoded text, indexed by id (``vocab_size`` entries; special tokens give
        their spelling): what structured output (:class:`plugformer.interfaces.Vocabulary`) masks by.
        Optional: a tokenizer that cannot say (its decoding is not a concatenation of per-token bytes) keeps
        this default, and structured output is unavailable with it."""
        raise PlugformerError(f"tokenizer {type(self).__name__} does not expose its token bytes, so structured "
                              "output is unavailable")

    def special_token_ids(self) -> set[int]:
        """Ids that stand for no text (eos, pad, mask; tokenizers with more, such as unknown or control
        tokens, add them): a structured-output guide never lets them spell output."""
        return {i for i in (self.eos_id, self.pad_id, self.mask_id) if i is not None}

    @abstractmethod
    def save(self, directory: Path) -> None:
        """Write everything :meth:`load` needs into ``directory`` (which exists)."""

    @classmethod
    @abstractmethod
    def load(cls, config: Any, directory: Path) -> Tokenizer:
        """Restore a tokenizer that :meth:`save` wrote."""

    @abstractmethod
    def fingerprint(self) -> str:
        """A short string that changes whenever the id mapping would change (keys token caches)."""
