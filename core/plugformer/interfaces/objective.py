"""Training objectives: what loss a batch of token windows yields."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

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

    def __init__(self, config: Any, tokenizer: Any):
        self.config, self.tokenizer = config, tokenizer

    @abstractmethod
    def __call__(self, model: nn.Module, tokens: Tensor) -> ObjectiveOutput:
        """Run the model on the batch and return the loss (mean over predicted tokens)."""
