"""The ``tensorboard`` callback: the run's scalars as TensorBoard event files, beside ``metrics.jsonl``.

``trainer.callbacks=[progress,metrics,tensorboard]`` writes ``<run dir>/tensorboard/events.out.tfevents.*``
(view with ``tensorboard --logdir runs/``): every logged training metric as ``train/<name>`` (loss, lr,
tokens_per_s, ...) and every evaluation metric as ``val/<name>`` (``val_loss`` → ``val/loss``), each at
its optimizer step, plus the run's config as text. Only rank 0 writes. On resume, events after the
checkpoint's step are purged, so the curves read like one uninterrupted run.

``torch.utils.tensorboard`` needs the ``tensorboard`` package (``pip install plugformer[tensorboard]``);
it is imported only when a run uses this callback.
"""
from __future__ import annotations

import json
from importlib.util import find_spec
from numbers import Real
from pathlib import Path
from typing import Any

from plugformer import RunInfo, UnavailableError, hookimpl
from plugformer import Availability

LOG_SUBDIR = "tensorboard"


def availability() -> Availability:
    """Whether the ``tensorboard`` package (which ``torch.utils.tensorboard`` writes through) is installed."""
    if find_spec("tensorboard") is None:
        return False, "needs the tensorboard package (pip install 'plugformer[tensorboard]')"
    return True, ""


def scalars(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    """``{prefix/name: value}`` for the plain numbers among ``metrics`` (``val_`` dropped after ``val/``)."""
    out = {}
    for name, value in metrics.items():
        if isinstance(value, Real) and not isinstance(value, bool):
            short = name[len("val_"):] if prefix == "val" and name.startswith("val_") else name
            out[f"{prefix}/{short}"] = float(value)
    return out


class TensorBoardLogger:
    """Writes training and validation scalars to ``<run dir>/tensorboard`` with a ``SummaryWriter``."""

    def __init__(self, config: Any, run_dir: Path):
        ok, reason = availability()
        if not ok:
            raise UnavailableError(f"callback 'tensorboard' is unavailable here: {reason}")
        self.log_dir = Path(run_dir) / LOG_SUBDIR
        self.writer: Any = None

    @hookimpl
    def plugformer_train_start(self, run: RunInfo) -> None:
        if not run.is_main:
            return
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops events a previous attempt logged after the checkpoint we resume from
        self.writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=run.start_step or None,
                                    flush_secs=10)
        if not run.start_step:
            self.writer.add_text("config", "```\n" + json.dumps(run.config, indent=1, default=str) + "\n```", 0)

    def _log(self, step: int, values: dict[str, float]) -> None:
        if self.writer is not None:
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, global_step=step)

    @hookimpl
    def plugformer_step_end(self, run: RunInfo, step: int, metrics: dict[str, float]) -> None:
        self._log(step, scalars(metrics, "train"))

    @hookimpl
    def plugformer_evaluate(self, run: RunInfo, step: int, metrics: dict[str, float]) -> None:
        self._log(step, scalars(metrics, "val"))
        if self.writer is not None:
            self.writer.flush()

    @hookimpl
    def plugformer_train_end(self, run: RunInfo, metrics: dict[str, Any]) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
