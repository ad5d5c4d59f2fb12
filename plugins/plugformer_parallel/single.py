"""The default strategy: the whole model in one process."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from plugformer.interfaces import ParallelStrategy, resolve_device
from plugformer_parallel.layout import is_sharded


class SingleProcess(ParallelStrategy):
    """One process, one device; no wrapping, checkpoints hold the plain state dicts."""

    def setup(self, device: str) -> torch.device:
        dev = torch.device(resolve_device(device))
        if dev.type == "cuda" and dev.index is not None:
            torch.cuda.set_device(dev)
        return dev

    def load(self, directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
        """A plain checkpoint, or a sharded one written by ``fsdp`` on any number of ranks."""
        if is_sharded(directory):
            from plugformer_parallel.sharded import load_sharded  # imports torch.distributed.checkpoint

            load_sharded(directory, model, optimizer)
        else:
            super().load(directory, model, optimizer)
