"""torch DistributedDataParallel: every rank holds the full model; gradients are averaged.

Launched by torchrun (``torchrun --nproc_per_node=2 -m plugformer train parallel=ddp``), which sets
RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT. Started without torchrun it runs as a group of one.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import socket
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from plugformer.interfaces import ModelTransform, ParallelStrategy, Stage, resolve_device
from plugformer_parallel.schemas import DDPConfig


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


class DistributedDataParallelStrategy(ParallelStrategy):
    """Data parallel over all ranks of the default process group."""

    def __init__(self, config: DDPConfig):
        super().__init__(config)
        self.device = torch.device("cpu")
        self._owns_group = False

    def setup(self, device: str) -> torch.device:
        kind = resolve_device(device).split(":")[0]
        if "WORLD_SIZE" not in os.environ:  # not under torchrun: a group of one on this machine
            os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                              MASTER_PORT=str(_free_port()))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = torch.device("cuda", local_rank) if kind == "cuda" else torch.device("cpu")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if not dist.is_initialized():
            backend = self.config.backend or ("nccl" if kind == "cuda" else "gloo")
            dist.init_process_group(backend, timeout=datetime.timedelta(seconds=self.config.timeout_s))
            self._owns_group = True
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        return self.device

    def transforms(self) -> list[ModelTransform]:
        return [_WrapDDP(self)]

    def no_sync(self, model: nn.Module) -> contextlib.AbstractContextManager[Any]:
        return model.no_sync() if isinstance(model, DistributedDataParallel) else contextlib.nullcontext()

    def reduce_mean(self, value: Tensor) -> Tensor:
        value = value.detach().clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value / self.world_size

    def barrier(self) -> None:
        dist.barrier()

    def teardown(self) -> None:
        if self._owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self._owns_group = False
