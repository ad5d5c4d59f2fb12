"""DeepSpeed ZeRO (stage 1, 2 or 3) as a parallel strategy, for users whose recipes are DeepSpeed's.

Launched like ``fsdp`` (``torchrun --nproc_per_node=N -m plugformer train parallel=deepspeed
parallel.stage=3``). ``deepspeed.initialize`` receives the model and *plugformer's* optimizer (the
plugformer scheduler keeps setting the learning rate of its param groups); the engine then owns
backward and step. The global batch, ``trainer.grad_accum`` and ``trainer.grad_clip`` keep their
plugformer meaning: the trainer's micro-batches are the engine's, the last one is the accumulation
boundary, and clipping is by the global norm over all partitions.

Checkpoints (inside the trainer's atomic temp dir, no pickle): the consolidated ``model.safetensors``
(what ``generate`` reads), each rank's partition of the optimizer state as ``zero-rank<R>.safetensors``
+ ``.json``, and ``deepspeed.json`` (stage, world size). Resuming needs the same stage and world size
(the optimizer partitions are laid out for them); the fp32 master weights are rebuilt from the model.

DeepSpeed is optional (``pip install 'plugformer[deepspeed]'``) and imported only when the strategy
starts. On CPU it runs with ``DS_ACCELERATOR=cpu`` (set here unless the user set it); its CPU
communication op is compiled with the system C++ compiler on first use (cached in
``TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from plugformer.checkpoint import (
    load_model,
    load_state,
    save_model,
    save_state,
    write_json,
)
from plugformer import ConfigError
from torch import Tensor, nn

from plugformer_parallel.availability import DEEPSPEED_NOT_INSTALLED
from plugformer_parallel.availability import deepspeed as deepspeed_availability
from plugformer_parallel.group import ProcessGroupStrategy
from plugformer_parallel.schemas import DeepSpeedConfig

NOT_INSTALLED = DEEPSPEED_NOT_INSTALLED
LAYOUT_FILE = "deepspeed.json"


availability = deepspeed_availability


def _import_deepspeed(device: torch.device) -> Any:
    ok, reason = availability()
    if not ok:
        raise ConfigError(f"parallel=deepspeed is unavailable: {reason}")
    # DeepSpeed picks its accelerator on import: name it from the device plugformer resolved
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if device.type == "cuda" else "cpu")
    import deepspeed

    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    return deepspeed


class DeepSpeedStrategy(ProcessGroupStrategy):
    """ZeRO data parallel over all ranks of the default process group, through ``deepspeed.initialize``."""

    config: DeepSpeedConfig

    def engine_config(self, batch_size: int, grad_accum: int, grad_clip: float) -> dict[str, Any]:
        """The DeepSpeed config dict plugformer's settings translate to (fp32; precision is autocast's)."""
        c = self.config
        return {
            "train_batch_size": batch_size,
            "train_micro_batch_size_per_gpu": batch_size // (self.dp_size * grad_accum),
            "gradient_accumulation_steps": grad_accum,
            "gradient_clipping": float(grad_clip),  # 0: none, like trainer.grad_clip
            "zero_optimization": {"stage": c.stage, "overlap_comm": c.overlap_comm,
                                  "reduce_bucket_size": c.reduce_bucket_size},
            "zero_allow_untested_optimizer": True,  # plugformer's optimizers are torch ones
            "steps_per_print": 2**31 - 1,
            "wall_clock_breakdown": False,
        }

    def prepare(self, model: nn.Module, optimizer: torch.optim.Optimizer, *, batch_size: int, grad_accum: int,
                grad_clip: float) -> tuple[nn.Module, torch.optim.Optimizer]:
        """``deepspeed.initialize`` over the model and plugformer's optimizer: returns the engine and its
        ZeRO optimizer (which steps the original one over the partitions this rank owns)."""
        deepspeed = _import_deepspeed(self.device)
        engine, zero_optimizer, _, _ = deepspeed.initialize(
            model=model, optimizer=optimizer, config=self.engine_config(batch_size, grad_accum, grad_clip))
        engine.set_gradient_accumulation_boundary(True)  # every backward is the last of its step unless no_sync
        return engine, zero_optimizer

    def no_sync(self, model: nn.Module) -> contextlib.AbstractContextManager[None]:
        """Micro-batches but the last: not an accumulation boundary (gradients accumulate locally)."""
        return _not_boundary(model)

    def backward(self, loss: Tensor, model: nn.Module) -> None:
        model.backward(loss, scale_wrt_gas=False)  # the trainer already divided by grad_accum

    def optimizer_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, grad_clip: float) -> None:
        model.step()  # clips (config gradient_clipping), steps and zeroes the gradients

    # -- checkpoints -------------------------------------------------------------------------------
    def save(self, directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Consolidated ``model.safetensors`` (rank 0), this rank's optimizer partition (every rank)."""
        if self.config.stage == 3:
            state = model._zero3_consolidated_16bit_state_dict()  # every rank takes part; rank 0 gets it
        else:
            state = model.module.state_dict() if self.is_main else None
        if self.is_main:
            save_model(directory, state)
            write_json(directory / LAYOUT_FILE, {"stage": self.config.stage, "world_size": self.world_size})
        with _base_optimizer(optimizer) as base:
            save_state(directory, f"zero-rank{self.rank}", base.state_dict())

    def load(self, directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
        """Restore a checkpoint :meth:`save` wrote with the same ZeRO stage and world size."""
        layout_path = Path(directory) / LAYOUT_FILE
        here = {"stage": self.config.stage, "world_size": self.world_size}
        if not layout_path.exists():
            raise ConfigError(f"checkpoint '{directory}' was not written by parallel=deepspeed; resume it with "
                              f"the strategy that wrote it (its model.safetensors loads anywhere, e.g. generate)")
        saved = json.loads(layout_path.read_text())
        if saved != here:
            raise ConfigError(f"checkpoint '{directory}' holds ZeRO partitions for stage {saved['stage']} on "
                              f"{saved['world_size']} ranks; this run is stage {here['stage']} on "
                              f"{here['world_size']} ranks: resume with the same parallel.stage and rank count")
        weights = load_model(directory)
        if self.config.stage == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(model.module.parameters()), modifier_rank=0):
                model.module.load_state_dict(weights)
        else:
            model.module.load_state_dict(weights)
        if optimizer is not None:
            optimizer.refresh_fp32_params()  # fp32 master partitions from the loaded weights (exact in fp32)
            with _base_optimizer(optimizer) as base:
                base.load_state_dict(load_state(directory, f"zero-rank{self.rank}"))


@contextlib.contextmanager
def _base_optimizer(zero_optimizer: Any) -> Iterator[torch.optim.Optimizer]:
    """Plugformer's optimizer inside DeepSpeed's ZeRO wrapper, its param groups holding this rank's
    fp32 partitions (ZeRO-3 lists them only while it steps) so its state dict can be taken or restored."""
    attach = getattr(zero_optimizer, "_set_fp32_optimizer_param_groups", None)
    if attach is not None:
        attach()
    try:
        yield zero_optimizer.optimizer
    finally:
        if attach is not None:
            zero_optimizer._clear_fp32_optimizer_param_groups()


@contextlib.contextmanager
def _not_boundary(engine: Any) -> Iterator[None]:
    engine.set_gradient_accumulation_boundary(False)
    try:
        yield
    finally:
        engine.set_gradient_accumulation_boundary(True)
