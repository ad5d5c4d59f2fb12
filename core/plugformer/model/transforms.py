"""The ordered model-transform pipeline: adapters/quantizers → tensor parallel → activation
checkpointing → compile → data-parallel wrapper (see :class:`plugformer.interfaces.Stage`).

Two transforms are core features chosen by config rather than plugins:

* :class:`ActivationCheckpointing` (``trainer.activation_checkpointing=true``) recomputes each block's
  activations in backward (``torch.utils.checkpoint``, non-reentrant);
* :class:`CompileBlocks` (``compile=true``, ``compile_backend=...``) runs each block's forward through
  ``torch.compile``.

Both change a block in place by giving it a subclass whose ``forward`` adds the behaviour (the trick
FSDP2's ``fully_shard`` uses too). So the module tree, parameter names and state-dict keys stay
exactly those of the plain model — checkpoints load with or without the transforms — and a
data-parallel wrapper applied later (DDP, or FSDP2 sharding each block) composes with them: its hooks
run around the checkpointed/compiled forward.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from plugformer.errors import ConfigError
from plugformer.interfaces import ModelTransform, Stage


def apply_transforms(model: nn.Module, transforms: list[ModelTransform]) -> nn.Module:
    """Apply ``transforms`` sorted by stage (stable: equal stages keep their given order)."""
    for transform in sorted(transforms, key=lambda t: int(t.stage)):
        model = transform.apply(model)
    return model


def config_transforms(cfg: Any) -> list[ModelTransform]:
    """The core transforms a train config switches on (the strategy adds its own after these)."""
    out: list[ModelTransform] = []
    if cfg.trainer.get("activation_checkpointing", False):
        out.append(ActivationCheckpointing())
    if cfg.get("compile", False):
        out.append(CompileBlocks(cfg.get("compile_backend", "inductor")))
    return out


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks of ``model`` (``model.blocks``, or those of the first Transformer inside)."""
    from plugformer.model.transformer import Transformer

    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, nn.ModuleList):
        return list(blocks)
    for module in model.modules():
        if isinstance(module, Transformer):
            return list(module.blocks)
    raise ConfigError(f"{type(model).__name__} has no transformer blocks (.blocks) to checkpoint or compile")


_CHECKPOINTED: dict[type, type] = {}


def _give_forward(module: nn.Module, tag: str, make_forward: Callable[[Callable[..., Any]], Callable[..., Any]],
                  cache: dict[type, type], flag: str) -> None:
    """Switch ``module`` to a subclass named ``<tag><Class>`` (one per class in ``cache``) whose forward
    is ``make_forward(the class's current forward)``. Nothing else about the module changes."""
    cls = type(module)
    if getattr(cls, flag, False):
        return
    if cls not in cache:
        cache[cls] = type(f"{tag}{cls.__name__}", (cls,), {"forward": make_forward(cls.forward), flag: True,
                                                           "__module__": cls.__module__})
    module.__class__ = cache[cls]


class ActivationCheckpointing(ModelTransform):
    """Each block keeps only its inputs in forward and recomputes its activations in backward
    (non-reentrant ``torch.utils.checkpoint``; dropout masks are replayed from the saved RNG state)."""

    stage = Stage.CHECKPOINT_ACTIVATIONS

    def apply(self, model: nn.Module) -> nn.Module:
        def make_forward(inner: Callable[..., Any]) -> Callable[..., Any]:
            def forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
                if not torch.is_grad_enabled():  # eval / generation: nothing to save or recompute
                    return inner(self, *args, **kwargs)
                return torch.utils.checkpoint.checkpoint(inner, self, *args, use_reentrant=False, **kwargs)
            return forward

        for block in transformer_blocks(model):
            _give_forward(block, "Checkpointed", make_forward, _CHECKPOINTED, "_plugformer_checkpointed")
        return model


class CompileBlocks(ModelTransform):
    """``torch.compile`` each block's forward. Blocks of one class share one compiled function, so
    identical layers compile once (their parameters are graph inputs, not constants)."""

    stage = Stage.COMPILE

    def __init__(self, backend: str = "inductor", **options: Any):
        super().__init__({"backend": backend, **options})
        self.backend, self.options = backend, options

    def apply(self, model: nn.Module) -> nn.Module:
        device = next(model.parameters()).device.type if any(True for _ in model.parameters()) else "cpu"
        problem = compile_problem(self.backend, device)
        if problem:
            raise ConfigError(problem)
        def make_forward(inner: Callable[..., Any]) -> Callable[..., Any]:
            fn = torch.compile(inner, backend=self.backend, **self.options)

            def forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
                return fn(self, *args, **kwargs)
            return forward

        subclasses: dict[type, type] = {}  # this model's: each apply compiles afresh
        for block in transformer_blocks(model):
            _give_forward(block, "Compiled", make_forward, subclasses, "_plugformer_compiled")
        return model


def _cxx_compiler() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def compile_problem(backend: str, device: str = "cpu") -> str | None:
    """Why ``torch.compile(backend=backend)`` cannot run here, or None when it can."""
    import torch._dynamo

    if backend not in torch._dynamo.list_backends(exclude_tags=()):
        offered = sorted({*torch._dynamo.list_backends(), "aot_eager", "eager"})
        return f"compile_backend '{backend}' is not a torch.compile backend; choose from: {', '.join(offered)}"
    if backend == "inductor" and device == "cpu" and _cxx_compiler() is None:
        return ("compile=true with compile_backend=inductor needs a C++ compiler for CPU code (none found: "
                "install g++, set CXX, or use compile_backend=aot_eager)")
    return None


__all__ = ["ActivationCheckpointing", "CompileBlocks", "apply_transforms", "compile_problem", "config_transforms",
           "transformer_blocks"]
