"""Text sources (where training and validation documents come from) and the batches protocol the
trainer draws from."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

if TYPE_CHECKING:
    from torch import nn

    from plugformer.interfaces.tokenizer import Tokenizer

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


B = TypeVar("B", bound="Batch")


@runtime_checkable
class Batch(Protocol):
    """What the trainer does with a batch: move it to the device and split it into micro-batches. A
    (B, T + 1) token tensor, a :class:`~plugformer.interfaces.SupervisedBatch` and a
    :class:`~plugformer.interfaces.PreferenceBatch` (and a :class:`~plugformer.interfaces.PairBatch`) all qualify;
    the objective reads the rest."""

    def to(self: B, device: Any, non_blocking: bool = False) -> B: ...

    def chunk(self: B, n: int) -> Iterable[B]: ...


@runtime_checkable
class Batches(Protocol):
    """The data side of a training run, as :class:`plugformer.training.Trainer` uses it.

    Built-ins: ``TrainingData`` (token windows of a :class:`TextSource`), ``SupervisedData`` (records
    for fine-tuning) and ``PairData`` (query/positive texts for objectives declaring ``batches: ["pairs"]``).
    The batch of a step must depend only on ``(seed, step)`` and the rank, so a resumed
    run sees the batches an uninterrupted one would.
    """

    #: the tokenizer the batches were made with (saved with every checkpoint)
    tokenizer: Tokenizer

    def train_batch(self, step: int, rows_per_rank: int) -> Batch:
        """This rank's ``rows_per_rank`` rows of the global batch of ``step`` (1-based)."""
        ...

    def val_batches(self, rows_per_rank: int) -> Iterable[Batch]:
        """The fixed held-out batches of one evaluation (this rank's rows of each)."""
        ...

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Data-specific held-out scores beyond the objective's loss (records: ``exact_match``); the
        trainer reports each as ``val_<name>``. Token windows have none: ``{}``."""
        ...
