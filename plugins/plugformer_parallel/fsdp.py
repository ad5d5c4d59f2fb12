"""FSDP2 (``torch.distributed.fsdp.fully_shard``): parameters, gradients and optimizer state sharded
across ranks, each transformer block gathered just in time for its forward and backward.

Launched like ``ddp`` (``torchrun --nproc_per_node=N -m plugformer train parallel=fsdp``); without
torchrun it runs as a group of one. Checkpoints are sharded (``dcp/``, written by every rank, loadable
on any number of ranks or by ``single``/``ddp``) plus a consolidated ``model.safetensors`` that
``generate`` reads like any other checkpoint's.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn
from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, MixedPrecisionPolicy, fully_shard

from plugformer.checkpoint import OPTIMIZER_STATE, load_model, load_state
from plugformer import ConfigError
from plugformer.interfaces import ModelTransform, Stage
from plugformer_parallel.group import ProcessGroupStrategy
from plugformer_parallel.schemas import FSDPConfig
from plugformer_parallel.sharded import is_sharded, load_sharded, save_sharded

_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
           "fp16": torch.float16, "float16": torch.float16}


def _dtype(name: str | None) -> torch.dtype | None:
    return None if name is None else _DTYPES[name]


def _cast_inputs(dtype: torch.dtype):
    """A forward pre-hook casting the floating tensor arguments (not nested ones) to ``dtype``."""

    def cast(value):
        return value.to(dtype) if isinstance(value, torch.Tensor) and value.is_floating_point() else value

    def hook(module: nn.Module, args: tuple, kwargs: dict):
        return tuple(cast(a) for a in args), {k: cast(v) for k, v in kwargs.items()}

    return hook


class _FullyShard(ModelTransform):
    """``fully_shard`` each block of ``model.blocks`` (one all-gather unit per block), then the root
    (embeddings, final norm, head: the rest), over the strategy's ``dp_mesh`` (None: all ranks)."""

    stage = Stage.WRAP

    def __init__(self, strategy: FullyShardedDataParallelStrategy):
        super().__init__(strategy.config)
        self.strategy = strategy

    def apply(self, model: nn.Module) -> nn.Module:
        c = self.config
        param_dtype = _dtype(c.param_dtype)
        # FSDP's own input casting rebuilds dataclass arguments (the blocks' Positions can't be), so the
        # blocks' floating tensor arguments are cast by a hook of ours instead
        kwargs = {"mesh": self.strategy.dp_mesh, "reshard_after_forward": c.reshard_after_forward,
                  "mp_policy": MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=_dtype(c.reduce_dtype),
                                                    cast_forward_inputs=False)}
        if c.cpu_offload:
            if self.strategy.device.type != "cuda":
                raise ConfigError("parallel.cpu_offload=true offloads GPU training state to host memory; "
                                  "it needs device=cuda (on CPU everything is in host memory already)")
            kwargs["offload_policy"] = CPUOffloadPolicy()
        for block in getattr(model, "blocks", []):
            fully_shard(block, **kwargs)
            if param_dtype is not None:
                block.register_forward_pre_hook(_cast_inputs(param_dtype), with_kwargs=True)
        if param_dtype is not None:  # logits leave the model in float32, for the loss
            kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=_dtype(c.reduce_dtype),
                                                       output_dtype=torch.float32, cast_forward_inputs=False)
        fully_shard(model, **kwargs)  # FSDP2 keeps the root gathered after forward (backward needs it first)
        return model


class FullyShardedDataParallelStrategy(ProcessGroupStrategy):
    """Data parallel with sharded model state over all ranks of the default process group."""

    config: FSDPConfig

    dp_mesh = None  # fully_shard over the default group's ranks

    def transforms(self) -> list[ModelTransform]:
        return [_FullyShard(self)]

    def unwrap(self, model: nn.Module) -> nn.Module:
        return model  # fully_shard changes the module in place

    def no_sync(self, model: nn.Module) -> contextlib.AbstractContextManager[None]:
        """Accumulate unsharded gradients locally; the last micro-batch reduce-scatters them."""
        return fsdp_no_sync(model)

    def save(self, directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Sharded ``dcp/`` from every rank, and the consolidated ``model.safetensors`` from rank 0."""
        save_sharded(directory, model, optimizer, write=self.write_shards)

    def load(self, directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
        """A sharded checkpoint (any world size), or a plain one written by ``single``/``ddp``."""
        if is_sharded(directory):
            load_sharded(directory, model, optimizer)
        else:
            load_full(directory, model, optimizer)


@contextlib.contextmanager
def fsdp_no_sync(model: nn.Module) -> Iterator[None]:
    """No gradient reduce-scatter in this context (for every micro-batch but the last)."""
    if not isinstance(model, FSDPModule):
        yield
        return
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def load_full(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
    """Load a plain checkpoint (full ``model.safetensors``, id-keyed ``optimizer``) into a sharded model.

    Every rank reads the files and keeps its own shards. The optimizer state's parameter ids are
    mapped to names through the optimizer's param groups, which list parameters in the same order as
    in the run that saved them (the same model and optimizer config build the same groups).
    """
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_optimizer_state_dict,
                                                         set_model_state_dict, set_optimizer_state_dict)

    full = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, load_model(directory), options=full)
    if optimizer is None:
        return
    saved = load_state(directory, OPTIMIZER_STATE)
    current = get_optimizer_state_dict(model, optimizer)
    groups = []
    names: dict[int, str] = {}
    if len(saved["param_groups"]) != len(current["param_groups"]):
        raise ConfigError(f"checkpoint '{directory}': optimizer has {len(saved['param_groups'])} param groups, "
                          f"this run's has {len(current['param_groups'])}")
    for old, new in zip(saved["param_groups"], current["param_groups"]):
        if len(old["params"]) != len(new["params"]):
            raise ConfigError(f"checkpoint '{directory}': optimizer param groups differ from this run's")
        names.update(zip(old["params"], new["params"]))
        groups.append({**old, "params": list(new["params"])})
    state = {names[int(i)]: value for i, value in saved["state"].items()}
    set_optimizer_state_dict(model, optimizer, {"state": state, "param_groups": groups}, options=full)
