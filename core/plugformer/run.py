"""What lifecycle hooks learn about the run they observe. Plain data, no torch."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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
