"""What lifecycle hooks learn about the run they observe: :class:`RunInfo` (plain data, no torch) and
:class:`TrainingState` (a read-only view of the live model, optimizer and gradients, plus the two things
a callback may ask of the trainer: extra metrics and an early stop)."""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass
class RunInfo:
    """A read-only view of a training run for callbacks and loggers."""

    run_dir: Path
    config: dict[str, Any]
    max_steps: int
    start_step: int = 0
    tokens_per_step: int = 0
    rank: int = 0
    world_size: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_main(self) -> bool:
        """True on the one process that should print and write files (rank 0)."""
        return self.rank == 0


class TrainingState:
    """The live training objects, for callbacks that need more than metrics (gradient-norm loggers, EMA
    weights, early stopping). Passed to the lifecycle hooks as ``state``.

    Read-only by contract: read parameters, gradients and optimizer state, copy them, but never modify
    them in place or step the optimizer; the trainer owns them (exact resume depends on it). What a
    callback may change is limited to two requests:

    - :meth:`log_metrics`: extra scalars that join the next logging step's ``metrics`` (so the
      ``metrics`` callback writes them to ``metrics.jsonl`` and every logger sees them);
    - :meth:`request_stop`: end training after the current step, as if it were the last (final
      evaluation, checkpoint and summary included).

    Gradients exist only inside ``plugformer_before_optimizer_step`` (after backward, before clipping
    and the optimizer step, which zeroes them). On data-parallel ranks they are already averaged;
    sharded strategies (FSDP, tensor parallel) show each rank its own shards.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any):
        """``model`` is the plain model (the strategy's ``unwrap`` of what trains)."""
        self._unwrapped, self._optimizer, self._scheduler = model, optimizer, scheduler
        self._metrics: dict[str, float] = {}
        self._stop_reason: str | None = None

    # -- what a callback reads ----------------------------------------------------------------------
    @property
    def model(self) -> nn.Module:
        """The plain model being trained (inside any data-parallel wrapper), with adapters applied."""
        return self._unwrapped

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The optimizer (its ``param_groups`` hold the current learning rates)."""
        return self._optimizer

    @property
    def scheduler(self) -> Any:
        """The learning-rate scheduler; it steps once after every optimizer step."""
        return self._scheduler

    @property
    def lr(self) -> float:
        """The learning rate of the first parameter group."""
        return float(self._optimizer.param_groups[0]["lr"])

    def trainable_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """``(name, parameter)`` for every parameter that trains (``requires_grad``)."""
        return ((n, p) for n, p in self._unwrapped.named_parameters() if p.requires_grad)

    def gradients(self) -> dict[str, torch.Tensor]:
        """``name → gradient`` of every trainable parameter that has one (empty outside
        ``plugformer_before_optimizer_step``)."""
        return {n: p.grad for n, p in self.trainable_parameters() if p.grad is not None}

    def grad_norm(self) -> float:
        """The global L2 norm of the current gradients (0.0 when there are none), before clipping."""
        import torch

        grads = list(self.gradients().values())
        if not grads:
            return 0.0
        return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.detach().float())
                                                           for g in grads])))

    # -- what a callback may ask ---------------------------------------------------------------------
    def log_metrics(self, **values: float) -> None:
        """Add scalars to the next logging step's metrics (the latest value of each name wins). Names must
        not collide with the trainer's own (``loss``, ``lr``, ...)."""
        for name, value in values.items():
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"metric {name!r} is {value}; metrics must be finite numbers")
            self._metrics[name] = value

    def request_stop(self, reason: str) -> None:
        """End training after the current step (the first reason given is kept and reported in the
        summary as ``stop_reason``)."""
        if self._stop_reason is None:
            self._stop_reason = str(reason) or "stop requested"

    @property
    def stop_reason(self) -> str | None:
        """Why a callback asked to stop, or None."""
        return self._stop_reason

    # -- the trainer's side --------------------------------------------------------------------------
    def take_metrics(self) -> dict[str, float]:
        """The metrics logged since the last call (the trainer merges them into a logging step's)."""
        out, self._metrics = self._metrics, {}
        return out


__all__ = ["RunInfo", "TrainingState"]
