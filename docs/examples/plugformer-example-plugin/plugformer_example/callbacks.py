"""A CSV metrics logger: spreadsheets and ``pandas.read_csv`` read it without any plugformer code."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from plugformer import RunInfo, hookimpl

CSV_FILE = "metrics.csv"
COLUMNS = ["step", "loss", "lr", "tokens_per_s", "val_loss", "val_perplexity"]


class CSVLogger:
    """A callback factory: ``CSVLogger(config, run_dir)``. One row per logged step (train columns) and
    per evaluation (``val_*`` columns). On resume, rows after the resumed step are dropped first."""

    def __init__(self, config: Any, run_dir: Path):
        self.path = Path(run_dir) / CSV_FILE

    def _append(self, step: int, metrics: dict[str, float]) -> None:
        new = not self.path.exists()
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({"step": step, **metrics})

    @hookimpl
    def plugformer_train_start(self, run: RunInfo) -> None:
        if not run.is_main or not self.path.exists():
            return
        with self.path.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= run.start_step]
        with self.path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)

    @hookimpl
    def plugformer_step_end(self, run: RunInfo, step: int, metrics: dict[str, float]) -> None:
        if run.is_main:
            self._append(step, metrics)

    @hookimpl
    def plugformer_evaluate(self, run: RunInfo, step: int, metrics: dict[str, float]) -> None:
        if run.is_main:
            self._append(step, metrics)
