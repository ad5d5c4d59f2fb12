"""The default strategy: the whole model in one process."""
from __future__ import annotations

import torch

from plugformer.interfaces import ParallelStrategy, resolve_device


class SingleProcess(ParallelStrategy):
    """One process, one device; no wrapping, checkpoints hold the plain state dicts."""

    def setup(self, device: str) -> torch.device:
        dev = torch.device(resolve_device(device))
        if dev.type == "cuda" and dev.index is not None:
            torch.cuda.set_device(dev)
        return dev
