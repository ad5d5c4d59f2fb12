"""The pluggy hooks plugformer calls. Every hook is prefixed ``plugformer_``.

A plugin is a module (or object) with functions marked ``@plugformer.hookimpl`` whose names match these
specs. An implementation may accept any subset of a spec's arguments, so specs can grow without breaking
plugins. Lifecycle hooks run on every rank; check ``run.is_main`` before printing or writing files.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from plugformer.commands import Commands
    from plugformer.registry import Registries
    from plugformer.run import RunInfo, TrainingState

PROJECT = "plugformer"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def plugformer_register(registries: Registries) -> None:
    """Register this plugin's components.

    Called once per process, when plugins load (never at import time). Use
    ``registries.<family>.register(name, "your_pkg.module:Class", schema=..., available=...)``; pass
    lazy ``"module:attr"`` strings so that listing plugins does not import torch or your code.
    """


@hookspec
def plugformer_register_commands(commands: Commands) -> None:
    """Add this plugin's CLI commands: ``commands.register("serve", "your_pkg.cli:serve", "one-line help")``.

    Called once per process, right after ``plugformer_register``. The target is a lazy ``"module:function"``
    string (the function takes the argument list and returns the exit status), so ``plugformer --help``
    lists the command without importing your code. A name the core or another plugin already has is
    refused, naming both packages (the plugin is recorded as failed; the existing command is kept).
    """


@hookspec
def plugformer_train_start(run: RunInfo, state: TrainingState) -> None:
    """Training is about to run its first step (``run.start_step`` > 0 after a resume).

    ``state`` (:class:`plugformer.run.TrainingState`, every lifecycle hook receives it) is a read-only
    view of the model, optimizer and gradients; through it a callback may add metrics
    (``state.log_metrics``) and ask to stop early (``state.request_stop``)."""


@hookspec
def plugformer_before_optimizer_step(run: RunInfo, step: int, state: TrainingState) -> None:
    """Every step, after backward and before gradient clipping and the optimizer step: the only point
    where ``state.gradients()`` / ``state.grad_norm()`` see this step's gradients."""


@hookspec
def plugformer_after_optimizer_step(run: RunInfo, step: int, state: TrainingState) -> None:
    """Every step, after the optimizer and the scheduler stepped (the weights are this step's result; an
    EMA of the weights updates here)."""


@hookspec
def plugformer_step_end(run: RunInfo, step: int, metrics: dict[str, float], state: TrainingState) -> None:
    """An optimizer step finished. ``metrics`` holds at least ``loss``, ``lr`` and ``tokens_per_s``, plus
    what callbacks added with ``state.log_metrics`` since the last logging step.

    Called on logging steps only (every ``trainer.log_every`` steps and the last one)."""


@hookspec
def plugformer_evaluate(run: RunInfo, step: int, metrics: dict[str, float], state: TrainingState) -> None:
    """An evaluation pass finished. ``metrics`` holds ``val_loss`` and ``val_perplexity``."""


@hookspec
def plugformer_checkpoint_saved(run: RunInfo, step: int, path: Path, state: TrainingState) -> None:
    """A checkpoint was written completely and atomically to ``path``."""


@hookspec
def plugformer_train_end(run: RunInfo, metrics: dict[str, Any], state: TrainingState) -> None:
    """Training finished (by reaching ``max_steps``, or early when a callback called
    ``state.request_stop``: then ``metrics["stop_reason"]`` says why); ``metrics`` summarises the run."""
