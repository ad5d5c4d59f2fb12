"""torch DistributedDataParallel: every rank holds the full model; gradients are averaged.

Launched by torchrun (``torchrun --nproc_per_node=2 -m plugformer train parallel=ddp``), which sets
RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT. Started without torchrun it runs as a group of one.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from plugformer.interfaces import ModelTransform, Stage
from plugformer_parallel.group import ProcessGroupStrategy
from plugformer_parallel.layout import is_sharded
from plugformer_parallel.schemas import DDPConfig


class _WrapDDP(ModelTransform):
    stage = Stage.WRAP

    def __init__(self, strategy: DistributedDataParallelStrategy):
        super().__init__(strategy.config)
        self.strategy = strategy

    def apply(self, model: nn.Module) -> nn.Module:
        device_ids = [self.strategy.device.index] if self.strategy.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids,
                                       find_unused_parameters=self.config.find_unused_parameters,
                                       bucket_cap_mb=self.config.bucket_cap_mb)


class DistributedDataParallelStrategy(ProcessGroupStrategy):
    """Data parallel over all ranks of the default process group."""

    config: DDPConfig

    def transforms(self) -> list[ModelTransform]:
        return [_WrapDDP(self)]

    def no_sync(self, model: nn.Module) -> contextlib.AbstractContextManager[Any]:
        return model.no_sync() if isinstance(model, DistributedDataParallel) else contextlib.nullcontext()

    def load(self, directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
        """A plain checkpoint, or a sharded one written by ``fsdp`` (any world size)."""
        if is_sharded(directory):
            from plugformer_parallel.sharded import load_sharded  # imports torch.distributed.checkpoint

            load_sharded(directory, model, optimizer)
        else:
            super().load(directory, model, optimizer)
