"""The built-in run observers. They are ordinary hook implementations, as any plugin's would be."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from plugformer import RunInfo, hookimpl
from plugformer.checkpoint import MetricsLog


class ProgressBar:
    """A tqdm bar over optimizer steps showing loss, tokens/s and the ETA."""

    def __init__(self, config: Any, run_dir: Path):
        self.bar: tqdm | None = None

    @hookimpl
    def plugformer_train_start(self, run: RunInfo) -> None:
        if run.is_main:
            self.bar = tqdm(total=run.max_steps, initial=run.start_step, desc="train", unit="step",
                            dynamic_ncols=True, mininterval=0.5)

    @hookimpl
    def plugformer_step_end(self, run: RunInfo, step: int, metrics: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix(loss=f"{metrics['loss']:.4f}", tok_s=f"{metrics['tokens_per_s']:,.0f}",
                                 lr=f"{metrics['lr']:.2e}", refresh=False)

    @hookimpl
    def plugformer_evaluate(self, run: RunInfo, step: int, metrics: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.write(f"step {step}: val_loss {metrics['val_loss']:.4f} "
                           f"(perplexity {metrics['val_perplexity']:.2f})")

    @hookimpl
    def plugformer_checkpoint_saved(self, run: RunInfo, step: int, path: Path) -> None:
        if self.bar is not None:
            self.bar.write(f"step {step}: checkpoint saved to {path}")

    @hookimpl
    def plugformer_train_end(self, run: RunInfo, metrics: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class MetricsFile:
    """Appends one JSON object per log step (``step, loss, lr, tokens_per_s``) and per evaluation
    (``step, val_loss, val_perplexity``) to ``metrics.jsonl``, strict JSON (a NaN or infinite value is
    ``null``). On resume, rows after the checkpoint's step, and a line cut short by a crash, are dropped
    first, so the file reads like one uninterrupted run."""

    def __init__(self, config: Any, run_dir: Path):
        self.log = MetricsLog(Path(run_dir))
        self.path = self.log.path

    def _append(self, row: dict[str, Any]) -> None:
        self.log.append(row)

    @hookimpl
    def plugformer_train_start(self, run: RunInfo) -> None:
        if run.is_main:
            self.log.truncate_after(run.start_step)

    @hookimpl
    def plugformer_step_end(self, run: RunInfo, step: int, metrics: dict[str, float]) -> None:
        if run.is_main:
            self._append({"step": step, **metrics})

    @hookimpl
    def plugformer_evaluate(self, run: RunInfo, step: int, metrics: dict[str, float]) -> None:
        if run.is_main:
            self._append({"step": step, **metrics})
