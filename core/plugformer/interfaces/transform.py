"""Model transforms: the ordered pipeline applied between building a model and training it."""
from __future__ import annotations

from abc import ABC, abstractmethod
from enum import IntEnum
from typing import Any

from torch import nn


class Stage(IntEnum):
    """Where a transform runs. Lower stages run first; the order is fixed by the core."""

    ADAPT = 10  # adapters (LoRA) wrap linear layers of the full-precision model
    QUANTIZE = 20  # quantizers replace weights
    SHARD = 30  # tensor parallel: split layers across ranks (DTensor)
    CHECKPOINT_ACTIVATIONS = 40  # recompute activations in backward
    COMPILE = 50  # torch.compile per block
    WRAP = 60  # data parallel wrappers (DDP, FSDP) go last


class ModelTransform(ABC):
    """Takes a model and returns the transformed model (the same object or a wrapper).

    Construction: ``Cls(config)``. Adapters and quantizers are transforms at :attr:`Stage.ADAPT` and
    :attr:`Stage.QUANTIZE`; parallel strategies contribute their own at ``SHARD`` and ``WRAP``.
    """

    stage: Stage = Stage.ADAPT

    def __init__(self, config: Any = None):
        self.config = config

    @abstractmethod
    def apply(self, model: nn.Module) -> nn.Module:
        """Transform ``model`` (in place or by wrapping) and return the result."""

    @property
    def name(self) -> str:
        return type(self).__name__
