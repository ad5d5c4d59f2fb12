"""Non-finite losses: a NaN or infinite loss never reaches a checkpoint, whatever ``trainer.on_nonfinite`` says.

- ``stop`` (default): the first non-finite step is noted on the device (no extra host synchronisation per
  step) and checked at the steps that synchronise anyway (log, evaluation, save, the last); the run then
  stops with one line naming the step, before anything of it is saved. Exit status 2; the checkpoints
  already written stay, and ``resume=true`` continues from the last one.
- ``skip``: every step is checked before its optimizer update (one host synchronisation per step); a step
  whose loss or gradients are not finite is not applied (the gradients are dropped, the step counter and
  the learning-rate schedule move on) and a warning line names it.

In both modes the weights are checked before each save, so a non-finite checkpoint is never written.
Data-parallel ranks agree: each decision is reduced over them, so they stop or skip together.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from plugformer.config.schema import OnNonFinite
from plugformer.errors import ConfigError, PlugformerError
from plugformer.interfaces import ParallelStrategy
from plugformer.checkpoint.rundir import warn


class NonFiniteError(PlugformerError):
    """Training produced a NaN or infinite loss or weights (``trainer.on_nonfinite=stop``)."""


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t  # a sharded DTensor: this rank's shard


def all_finite(tensors: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """A 0-d bool tensor on ``device``: every (local shard of each) tensor is finite. No host sync."""
    flags = [torch.isfinite(_local(t)).all().to(device) for t in tensors if _local(t).numel()]
    return torch.stack(flags).all() if flags else torch.ones((), dtype=torch.bool, device=device)


class NonFiniteGuard:
    """Watches each step's loss; see the module docstring for the two modes. ``last_checkpoint`` names the
    newest saved checkpoint in the stop message."""

    def __init__(self, mode: Any, strategy: ParallelStrategy, device: torch.device,
                 last_checkpoint: Callable[[], Path | None] = lambda: None):
        value = str(getattr(mode, "value", mode))
        if value not in OnNonFinite.__members__:
            raise ConfigError(f"trainer.on_nonfinite={value!r} is not one of: {', '.join(OnNonFinite.__members__)}")
        self.mode = OnNonFinite(value)
        self.strategy, self.device, self.last_checkpoint = strategy, device, last_checkpoint
        self.first_bad = torch.zeros((), dtype=torch.long, device=device)  # 0: none yet
        self.bad_value = torch.zeros((), device=device)
        self.skipped: list[int] = []

    def allow_update(self, step: int, loss: torch.Tensor, model: nn.Module) -> bool:
        """Whether the optimizer may apply ``step`` (called between backward and the optimizer step)."""
        finite = torch.isfinite(loss.detach())
        if self.mode is OnNonFinite.stop:
            newly = (self.first_bad == 0) & ~finite
            self.first_bad = torch.where(newly, torch.full_like(self.first_bad, step), self.first_bad)
            self.bad_value = torch.where(newly, loss.detach().float(), self.bad_value)
            return True
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        ok = finite & all_finite(grads, self.device)
        if self.strategy.reduce_mean(ok.float()).item() >= 1.0:
            return True
        self.skipped.append(step)
        if self.strategy.is_main:
            what = "loss" if not bool(finite) else "gradients"
            warn(f"step {step}: non-finite {what}; update skipped (trainer.on_nonfinite=skip)")
        return False

    def check(self) -> None:
        """Stop if a step since the start had a non-finite loss on any rank (a host synchronisation)."""
        if self.mode is not OnNonFinite.stop:
            return
        any_bad = self.strategy.reduce_mean((self.first_bad > 0).float()).item() > 0
        if any_bad:
            step = int(self.first_bad.item())
            where = f"at step {step} (loss {float(self.bad_value.item())})" if step else "on another rank"
            self._stop(f"non-finite loss {where}")

    def check_weights(self, model: nn.Module, step: int) -> None:
        """Refuse to save weights that are not finite (on any rank)."""
        ok = all_finite([p.detach() for p in model.parameters()], self.device)
        if self.strategy.reduce_mean(ok.float()).item() < 1.0:
            self._stop(f"non-finite weights after step {step}")

    def _stop(self, what: str) -> None:
        last = self.last_checkpoint()
        kept = f"the last checkpoint, {last}, is kept" if last is not None else "no checkpoint was written"
        raise NonFiniteError(f"{what}; stopped without saving it ({kept}): lower optimizer.lr, set "
                             "trainer.grad_clip, or pass trainer.on_nonfinite=skip to skip such steps")


__all__ = ["NonFiniteError", "NonFiniteGuard", "OnNonFinite", "all_finite"]
