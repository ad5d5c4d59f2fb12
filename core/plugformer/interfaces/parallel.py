"""Parallel strategies: how processes, devices and model replicas cooperate."""
from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from plugformer.errors import ConfigError
from plugformer.interfaces.transform import ModelTransform


def resolve_device(requested: str) -> str:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``; ``cuda`` without one is an error."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    kind = requested.split(":")[0]
    if kind not in ("cpu", "cuda"):
        raise ConfigError(f"device '{requested}' is not one of: auto, cpu, cuda, cuda:N")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{requested}' requested but torch sees no CUDA device here; use device=cpu or auto")
    return requested


class ParallelStrategy(ABC):
    """Owns the process group, wraps the model, splits the batch and saves/loads checkpoints.

    Construction: ``Cls(config)``; then the trainer calls, in order:

    1. :meth:`setup` (``device`` is ``"cpu"``, ``"cuda"`` or ``"auto"``): start the process group from
       torchrun's environment if distributed; return this rank's ``torch.device``.
    2. :meth:`transforms`: model transforms this strategy contributes to the ordered pipeline (tensor
       parallel at ``Stage.SHARD``, DDP/FSDP wrappers at ``Stage.WRAP``).
    3. :meth:`prepare` once the optimizer and scheduler exist (an engine such as DeepSpeed takes both).
       Per step: the global batch is split by :attr:`dp_rank`/:attr:`dp_size`; :meth:`no_sync` wraps
       the forward/:meth:`backward` of every micro-batch but the last; :meth:`optimizer_step` clips and
       steps; metrics go through :meth:`reduce_mean`.
    4. :meth:`save` / :meth:`load` for checkpoints (:meth:`after_save` / :meth:`wait_for_save` commit a
       save that finishes in the background), :meth:`teardown` at the end.

    The defaults describe one process holding the whole model; distributed strategies override them.
    """

    rank: int = 0
    world_size: int = 1

    def __init__(self, config: Any = None):
        self.config = config

    @abstractmethod
    def setup(self, device: str) -> torch.device:
        """Start whatever the strategy needs and return the device this rank computes on."""

    def transforms(self) -> list[ModelTransform]:
        return []

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def dp_rank(self) -> int:
        """This rank's index among data-parallel replicas (which slice of the global batch it takes)."""
        return self.rank

    @property
    def dp_size(self) -> int:
        return self.world_size

    def unwrap(self, model: nn.Module) -> nn.Module:
        """The plain model inside any wrapper this strategy added."""
        return getattr(model, "module", model)

    def no_sync(self, model: nn.Module) -> contextlib.AbstractContextManager[Any]:
        """Context for micro-batches whose gradients must not be synchronised yet."""
        return contextlib.nullcontext()

    def prepare(self, model: nn.Module, optimizer: torch.optim.Optimizer, *, batch_size: int, grad_accum: int,
                grad_clip: float) -> tuple[nn.Module, torch.optim.Optimizer]:
        """Hand the transformed model and its (already scheduled) optimizer to an engine that owns them
        both (DeepSpeed); returns what the trainer then uses. Unchanged here."""
        return model, optimizer

    def backward(self, loss: Tensor, model: nn.Module) -> None:
        """Back-propagate one micro-batch's (already grad_accum-scaled) loss."""
        loss.backward()

    def optimizer_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, grad_clip: float) -> None:
        """Clip gradients to the global norm ``grad_clip`` (0: no clipping), step and zero them."""
        if grad_clip > 0:
            # over the transformed model's own parameters: wrappers (DDP) hold the same ones, and
            # sharded ones (FSDP2 DTensors) are clipped by their global norm
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def reduce_mean(self, value: Tensor) -> Tensor:
        """Mean of ``value`` over data-parallel ranks (identity for one process)."""
        return value

    def barrier(self) -> None:
        """Wait for every rank."""

    def save(self, directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Write ``model.safetensors`` and the optimizer state into ``directory`` (main rank writes)."""
        from plugformer.checkpoint import OPTIMIZER_STATE, save_model, save_state

        if self.is_main:
            save_model(directory, self.unwrap(model).state_dict())
            save_state(directory, OPTIMIZER_STATE, optimizer.state_dict())

    def after_save(self, commit: Callable[[], None]) -> None:
        """Run ``commit`` (every rank: the rename making the checkpoint complete) once what :meth:`save`
        started is on disk: at once here; a strategy that saves asynchronously defers it to
        :meth:`wait_for_save`."""
        commit()

    def wait_for_save(self) -> None:
        """Wait for an asynchronous save still writing and run its commit (every rank calls it at the same
        points: before the next save and at the end of training). Nothing to wait for here."""

    def load(self, directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
        """Restore what :meth:`save` wrote, on every rank."""
        from plugformer.checkpoint import OPTIMIZER_STATE, load_model, load_state

        self.unwrap(model).load_state_dict(load_model(directory))
        if optimizer is not None:
            optimizer.load_state_dict(load_state(directory, OPTIMIZER_STATE))

    def teardown(self) -> None:
        """Release the process group."""

    @contextlib.contextmanager
    def running(self, device: str) -> Iterator[torch.device]:
        """``setup`` … ``teardown`` as a context manager."""
        dev = self.setup(device)
        try:
            yield dev
        finally:
            self.teardown()
