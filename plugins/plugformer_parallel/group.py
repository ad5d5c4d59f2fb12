"""The process group every distributed strategy starts from torchrun's environment, and the DCP writes
(synchronous or asynchronous) of the strategies that save sharded checkpoints.

torchrun sets RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT; started without torchrun a strategy
runs as a group of one on this machine. gloo on CPU, nccl on CUDA unless the config names a backend.
"""
from __future__ import annotations

import datetime
import os
import socket
import warnings
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

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
        if getattr(self.config, "async_checkpoint", False) and self._checkpoint_group is None:
            # background writes run their own collectives: on a group of their own, never interleaved
            # with the training step's on the default group
            self._checkpoint_group = dist.new_group(backend="gloo")
        return self.device

    # -- sharded checkpoints, synchronous or in the background ---------------------------------------
    _checkpoint_group = None
    _pending: tuple[Future, Callable[[], None] | None] | None = None

    def write_shards(self, directory: Path, state: dict[str, Any]) -> None:
        """DCP-save ``state`` (every rank its shards) into ``directory``: now, or with
        ``parallel.async_checkpoint=true`` staged to memory now and written in the background (the
        checkpoint is committed by :meth:`wait_for_save`, after the writes are done)."""
        import torch.distributed.checkpoint as dcp

        writer = dcp.FileSystemWriter(directory, thread_count=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self._checkpoint_group is None:
                dcp.save(state, storage_writer=writer)
            else:
                future = dcp.async_save(state, storage_writer=writer, process_group=self._checkpoint_group)
                self._pending = (future, None)

    def after_save(self, commit: Callable[[], None]) -> None:
        if self._pending is None:
            commit()
        else:
            self._pending = (self._pending[0], commit)

    def wait_for_save(self) -> None:
        if self._pending is None:
            return
        (future, commit), self._pending = self._pending, None
        future.result()  # raises what the background writes raised: the checkpoint stays uncommitted
        if commit is not None:
            commit()

    def reduce_mean(self, value: Tensor) -> Tensor:
        value = value.detach().clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value / self.world_size

    def barrier(self) -> None:
        dist.barrier()

    def teardown(self) -> None:
        # a save still pending here means training stopped with an error: it is never committed (the
        # previous checkpoint stays `last`); its leftover .tmp-step-N is cleared by the next save
        self._pending = None
        if self._owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self._owns_group = False
