"""Callbacks: objects whose ``@hookimpl`` methods observe a run (loggers, progress bars) and, through the
training state, may add metrics or stop it (gradient-norm loggers, EMA weights, early stopping)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class CallbackFactory(Protocol):
    """``factory(config, run_dir) -> object`` whose methods are marked ``@plugformer.hookimpl``.

    The trainer registers the object with the plugin manager for the duration of the run, so it
    receives ``plugformer_train_start``, ``plugformer_before_optimizer_step`` and
    ``plugformer_after_optimizer_step`` (every step), ``plugformer_step_end`` (logging steps),
    ``plugformer_evaluate``, ``plugformer_checkpoint_saved`` and ``plugformer_train_end`` (see
    :mod:`plugformer.hookspecs`). A method may take any subset of a hook's arguments.

    Every lifecycle hook gets ``run`` (:class:`plugformer.RunInfo`: plain facts about the run) and
    ``state`` (:class:`plugformer.TrainingState`): a read-only view of the model, optimizer, scheduler
    and, inside ``plugformer_before_optimizer_step``, the gradients. Through ``state`` a callback adds
    scalars to the next logging step's metrics (``state.log_metrics(grad_norm=...)``: they reach
    ``metrics.jsonl`` and every logger) and ends training after the current step
    (``state.request_stop(reason)``: final evaluation, checkpoint and a summary with ``stop_reason``).
    """

    def __call__(self, config: Any, run_dir: Path) -> object: ...
