"""2-D parallel: tensor parallel inside a replica, FSDP2 across replicas, on a ("dp", "tp") DeviceMesh.

``torchrun --nproc_per_node=4 -m plugformer train parallel=fsdp_tp parallel.tp=2`` runs 2 replicas of
2 tensor-parallel ranks each. Each layer is split over its replica's ``tp`` ranks exactly as
``parallel=tp`` splits it (same plan, same options); ``fully_shard`` then shards every parameter
(already a DTensor on the ``tp`` mesh) across the ``dp`` dimension. The global batch is split over
``dp`` only: the ``tp`` ranks of one replica read the same rows. Checkpoints are DCP shards plus a
consolidated ``model.safetensors`` (the ``tp`` layout: qkv stored in its usual row order), loadable
by every strategy on any number of ranks.
"""
from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from plugformer import ConfigError
from plugformer.interfaces import ModelTransform
from plugformer_parallel.fsdp import _FullyShard, fsdp_no_sync
from plugformer_parallel.group import ProcessGroupStrategy
from plugformer_parallel.schemas import FSDPTPConfig
from plugformer_parallel.tp import TensorParallelStrategy, _TensorParallel


def mesh_shape(world_size: int, tp: int) -> tuple[int, int]:
    """(dp, tp) for ``world_size`` ranks, or a one-line error naming both numbers."""
    if world_size % tp:
        raise ConfigError(f"parallel=fsdp_tp: world size {world_size} is not divisible by parallel.tp={tp}; "
                          f"run a multiple of {tp} processes or choose a parallel.tp dividing {world_size}")
    return world_size // tp, tp


class FSDPTensorParallelStrategy(TensorParallelStrategy):
    """Tensor parallel over the mesh's ``tp`` dimension, FSDP2 over its ``dp`` dimension."""

    config: FSDPTPConfig

    def setup(self, device: str) -> torch.device:
        dev = ProcessGroupStrategy.setup(self, device)
        self.mesh: DeviceMesh = init_device_mesh(dev.type, mesh_shape(self.world_size, self.config.tp),
                                                 mesh_dim_names=("dp", "tp"))
        return dev

    @property
    def tp_mesh(self) -> DeviceMesh:
        return self.mesh["tp"]

    @property
    def dp_mesh(self) -> DeviceMesh:
        return self.mesh["dp"]

    def transforms(self) -> list[ModelTransform]:
        return [_TensorParallel(self), _FullyShard(self)]

    @property
    def dp_rank(self) -> int:
        return self.mesh["dp"].get_local_rank()

    @property
    def dp_size(self) -> int:
        return self.mesh["dp"].size()

    def unwrap(self, model: nn.Module) -> nn.Module:
        return model  # both transforms change the module in place

    def no_sync(self, model: nn.Module) -> contextlib.AbstractContextManager[None]:
        return fsdp_no_sync(model)

    def reduce_mean(self, value: Tensor) -> Tensor:
        """Mean over the replicas (the ``tp`` ranks of one replica hold the same value already)."""
        value = value.detach().clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM, group=self.mesh["dp"].get_group())
        return value / self.dp_size
