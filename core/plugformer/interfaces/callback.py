"""Callbacks: objects whose ``@hookimpl`` methods observe a run (loggers, progress bars)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class CallbackFactory(Protocol):
    """``factory(config, run_dir) -> object`` whose methods are marked ``@plugformer.hookimpl``.

    The trainer registers the object with the plugin manager for the duration of the run, so it
    receives ``plugformer_train_start``, ``plugformer_step_end``, ``plugformer_evaluate``,
    ``plugformer_checkpoint_saved`` and ``plugformer_train_end`` (see :mod:`plugformer.hookspecs`).
    """

    def __call__(self, config: Any, run_dir: Path) -> object: ...
