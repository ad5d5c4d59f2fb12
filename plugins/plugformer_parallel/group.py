"""The process group every distributed strategy starts from torchrun's environment.

torchrun sets RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT; started without torchrun a strategy
runs as a group of one on this machine. gloo on CPU, nccl on CUDA unless the config names a backend.
"""
from __future__ import annotations

import datetime
import os
import socket

import torch
import torch.distributed as dist
from torch import Tensor

from plugformer.interfaces import ParallelStrategy, resolve_device


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ProcessGroupStrategy(ParallelStrategy):
    """Setup/teardown of the default process group, mean-reduction and barrier over all its ranks.

    The config needs ``backend`` (None: nccl on CUDA, gloo on CPU) and ``timeout_s``.
    """

    def __init__(self, config):
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
