"""Training objectives: what loss a batch of token windows yields."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn


@dataclass
class ObjectiveOutput:
    """The scalar loss to backpropagate, plus detached tensors worth logging (no ``.item()`` here)."""

    loss: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)


class Objective(ABC):
    """Turns a batch of token windows into a loss.

    Construction: ``Cls(config, tokenizer)``. The data pipeline hands ``tokens`` of shape
    (B, seq_len + 1), int64; a causal LM predicts ``tokens[:, 1:]`` from ``tokens[:, :-1]``.
    :attr:`causal` tells the model assembly whether attention is causal (decoder) or not (encoder).
    """

    causal: bool = True
    #: the objective's option that gives it parameters of its own (e.g. ``learn_temperature``), named when the
    #: trainer refuses them (see :meth:`trainable_module`); empty when it has no such option
    parameters_option: str = ""

    def __init__(self, config: Any, tokenizer: Any):
        self.config, self.tokenizer = config, tokenizer

    def trainable_module(self) -> nn.Module | None:
        """Parameters the objective trains itself, beside the model's (a learned temperature), as a module; None
        (the default) when it has none.

        The trainer moves the module to the run's device, gives its trainable parameters an optimizer param group
        of their own (no weight decay, the optimizer's learning rate and schedule, not clipped with the model's
        gradients), and saves and restores its ``state_dict`` with the training state (``trainer_state``), so
        ``resume=true`` continues exactly. They are not part of the model checkpoint. Only ``parallel=single``
        trains them: other strategies do not synchronise parameters outside the model, and are refused."""
        return None

    @abstractmethod
    def __call__(self, model: nn.Module, tokens: Tensor) -> ObjectiveOutput:
        """Run the model on the batch and return the loss (mean over predicted tokens).

        ``tokens`` is a plain tensor of windows for text sources; record sources (supervised
        fine-tuning) hand a :class:`SupervisedBatch` or a :class:`PreferenceBatch` instead (contrastive
        objectives: a :class:`PairBatch`)."""


@dataclass
class SupervisedBatch:
    """Token rows whose loss counts only where :attr:`loss_mask` is True (the responses).

    ``tokens`` (B, T + 1) int64 are padded on the right; ``loss_mask`` (B, T) bool marks the targets
    ``tokens[:, 1:]`` to learn (False on prompt tokens and padding). Like a tensor, it moves with
    :meth:`to` and splits into micro-batches with :meth:`chunk`, so the trainer handles both alike.
    """

    tokens: Tensor
    loss_mask: Tensor

    def to(self, device: Any, non_blocking: bool = False) -> SupervisedBatch:
        return SupervisedBatch(self.tokens.to(device, non_blocking=non_blocking),
                               self.loss_mask.to(device, non_blocking=non_blocking))

    def chunk(self, n: int) -> list[SupervisedBatch]:
        return [SupervisedBatch(t, m) for t, m in zip(self.tokens.chunk(n), self.loss_mask.chunk(n))]

    def targets(self, ignore_index: int = -100) -> Tensor:
        """``tokens[:, 1:]`` with ``ignore_index`` wherever the loss does not count (B, T)."""
        return self.tokens[:, 1:].masked_fill(~self.loss_mask, ignore_index)

    @classmethod
    def unmasked(cls, tokens: Tensor) -> SupervisedBatch:
        """Plain windows: every target counts (causal LM)."""
        return cls(tokens, torch.ones_like(tokens[:, 1:], dtype=torch.bool))


@dataclass
class PreferenceBatch:
    """Preference pairs for the same prompts: row ``i`` of :attr:`chosen` is preferred to row ``i`` of
    :attr:`rejected`; each masks its prompt so only the response tokens are scored."""

    chosen: SupervisedBatch
    rejected: SupervisedBatch

    def to(self, device: Any, non_blocking: bool = False) -> PreferenceBatch:
        return PreferenceBatch(self.chosen.to(device, non_blocking), self.rejected.to(device, non_blocking))

    def chunk(self, n: int) -> list[PreferenceBatch]:
        return [PreferenceBatch(c, r) for c, r in zip(self.chosen.chunk(n), self.rejected.chunk(n))]


@dataclass
class PairBatch:
    """Texts to embed in pairs, for contrastive training (objectives declaring ``batches: ["pairs"]``): row ``i`` of
    :attr:`query` belongs with row ``i`` of :attr:`positive`, and every other row of the batch is its in-batch
    negative; :attr:`negative`, when the records have one, adds a hard negative per query.

    Each text is a right-padded row of token ids (B, T) int64 with its mask (B, T) bool (True: a real token), the
    layout :func:`plugformer.retrieval.pooled_embeddings` reads. Micro-batches (:meth:`chunk`) keep their rows
    together, so gradient accumulation shrinks the pool of in-batch negatives to the micro-batch.
    """

    query: Tensor
    query_mask: Tensor
    positive: Tensor
    positive_mask: Tensor
    negative: Tensor | None = None
    negative_mask: Tensor | None = None

    def _tensors(self) -> tuple[Tensor | None, ...]:
        return (self.query, self.query_mask, self.positive, self.positive_mask, self.negative, self.negative_mask)

    def to(self, device: Any, non_blocking: bool = False) -> PairBatch:
        return PairBatch(*(t.to(device, non_blocking=non_blocking) if t is not None else None
                           for t in self._tensors()))

    def chunk(self, n: int) -> list[PairBatch]:
        parts = [t.chunk(n) if t is not None else None for t in self._tensors()]
        count = len(parts[0])
        return [PairBatch(*(p[i] if p is not None else None for p in parts)) for i in range(count)]

    def __len__(self) -> int:
        return int(self.query.shape[0])
