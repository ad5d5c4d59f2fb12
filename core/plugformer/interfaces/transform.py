"""Model transforms: the ordered pipeline applied between building a model and training it."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from enum import IntEnum
from pathlib import Path
from typing import Any

import torch
from torch import nn

from plugformer.checkpoint.layout import ADAPTER_DIR as CHECKPOINT_ADAPTER_DIR
from plugformer.errors import PlugformerError


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

    def save_artifacts(self, directory: Path) -> None:
        """Write files this transform adds to a checkpoint (next to ``model.safetensors``) into
        ``directory``, after :meth:`apply`. Most transforms add none; adapters write their own format.

        Called on every rank (so sharded weights can be gathered collectively); only the main rank
        (``torch.distributed`` rank 0, or the only process) writes."""

    @property
    def name(self) -> str:
        return type(self).__name__


class Adapter(ModelTransform):
    """A parameter-efficient adapter (family ``adapter``): :meth:`apply` freezes the base model and adds
    trainable weights, so the optimizer sees only those (``requires_grad``).

    Beyond :meth:`apply` an adapter saves itself in its library's own format (:meth:`save_artifacts`
    writes ``ADAPTER_DIR`` inside a checkpoint), loads such a directory onto a plain model
    (:meth:`load_adapter`, for ``generate checkpoint=BASE adapter=DIR``) and folds itself into the base
    weights (:meth:`merge`, for ``plugformer merge``).

    Optionally (capability ``multi_adapter: True``) several saved adapters load side by side on one base
    under names (:meth:`load_named`) and each row of a batch runs through its own adapter or none
    (:meth:`route_rows`), so one model serves requests for different fine-tunes in one forward pass
    (``plugformer.engine.AdapterSet`` drives both).
    """

    stage = Stage.ADAPT
    ADAPTER_DIR = CHECKPOINT_ADAPTER_DIR  # the subdirectory of a checkpoint holding the adapter's own files

    @classmethod
    @abstractmethod
    def load_adapter(cls, model: nn.Module, directory: Path) -> nn.Module:
        """``model`` (plain, full-precision base weights loaded) with the adapter saved in ``directory``."""

    @staticmethod
    @abstractmethod
    def merge(model: nn.Module) -> nn.Module:
        """The plain model with the adapter folded into its weights (same state-dict keys as the base)."""

    @classmethod
    def load_named(cls, model: nn.Module, directory: Path, name: str) -> nn.Module:
        """``model`` with the adapter saved in ``directory`` added under ``name``, unmerged, leaving the
        adapters loaded by earlier calls in place (the first call may wrap or inject into the plain base;
        later calls receive what the previous one returned and add to it).

        Outside :meth:`route_rows` the returned model computes the plain base model: a loaded adapter acts
        only on the rows routed to it. Adapters that cannot do this keep the default, which refuses."""
        raise PlugformerError(f"adapter {_entry_label(cls)} cannot be loaded side by side with other adapters "
                              "(it does not declare capability multi_adapter)")

    @classmethod
    def route_rows(cls, model: nn.Module, names: Sequence[str | None]) -> AbstractContextManager[None]:
        """A context manager inside which each forward pass of ``model`` (what :meth:`load_named` returned, or
        the base module it wraps) with batch size ``len(names)`` sends row ``i`` through the adapter loaded
        as ``names[i]`` (``None``: the base weights only)."""
        raise PlugformerError(f"adapter {_entry_label(cls)} cannot route batch rows through different adapters "
                              "(it does not declare capability multi_adapter)")


def _entry_label(cls: type) -> str:
    """How an error names an adapter class: its registry entry name where it declares one."""
    return repr(getattr(cls, "entry_name", None) or cls.__name__)


class Quantizer(ModelTransform):
    """Replaces weights by a lower-precision representation (family ``quantizer``).

    :meth:`apply` quantizes a full-precision model in place. A quantized checkpoint
    (``plugformer quantize``) holds :meth:`quantized_state`'s plain tensors and JSON-able metadata;
    :meth:`load_quantized` rebuilds the quantized model from them on a freshly built full-precision
    model of the same config, without needing the original weights.
    """

    stage = Stage.QUANTIZE

    @abstractmethod
    def quantized_state(self, model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """(plain tensors for safetensors, string metadata) describing the quantized ``model``."""

    @abstractmethod
    def load_quantized(self, model: nn.Module, tensors: dict[str, torch.Tensor],
                       metadata: dict[str, str]) -> nn.Module:
        """``model`` (built from the checkpoint's config) made quantized, holding the saved weights."""
