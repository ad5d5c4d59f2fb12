"""The ordered model-transform pipeline: adapters/quantizers → tensor parallel → activation
checkpointing → compile → data-parallel wrapper (see :class:`plugformer.interfaces.Stage`).

Two transforms are core features chosen by config rather than plugins:

* :class:`ActivationCheckpointing` (``trainer.activation_checkpointing=true``, or ``N`` for every N-th
  block, or a list of block indices) recomputes the chosen blocks' activations in backward
  (``torch.utils.checkpoint``, non-reentrant);
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
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from plugformer.errors import ConfigError
from plugformer.families import TRANSFORM_FAMILIES
from plugformer.interfaces import ModelTransform, Stage


def apply_transforms(model: nn.Module, transforms: list[ModelTransform]) -> nn.Module:
    """Apply ``transforms`` sorted by stage (stable: equal stages keep their given order)."""
    for transform in sorted(transforms, key=lambda t: int(t.stage)):
        model = transform.apply(model)
    return model


def config_transforms(cfg: Any, registries: Any = None) -> list[ModelTransform]:
    """The transforms a train config switches on (the strategy adds its own after these): with
    ``registries``, the ``adapter`` and ``quantizer`` components it names (``none`` adds nothing), then
    the core's own (activation checkpointing, compile)."""
    out: list[ModelTransform] = component_transforms(cfg, registries) if registries is not None else []
    chosen = checkpointed_blocks(cfg.trainer.get("activation_checkpointing", False), int(cfg.model.n_layers))
    if chosen:
        out.append(ActivationCheckpointing(None if len(chosen) == cfg.model.n_layers else chosen))
    if cfg.get("compile", False):
        out.append(CompileBlocks(cfg.get("compile_backend", "inductor")))
    return out


TRANSFORM_GROUPS = TRANSFORM_FAMILIES  # config groups whose component is a ModelTransform


def component_transforms(cfg: Any, registries: Any) -> list[ModelTransform]:
    """The ``adapter`` and ``quantizer`` transforms ``cfg`` names, built through the registries
    (a config without those groups, e.g. a checkpoint from before they existed, has none)."""
    from plugformer.build import build

    out: list[ModelTransform] = []
    for group in TRANSFORM_GROUPS:
        node = cfg.get(group)
        if node is not None and node.get("name", "none") != "none":
            out.append(build(registries, group, node))
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


AC_KEY = "trainer.activation_checkpointing"
AC_CHOICES = "true (every block), false, N (every N-th block: 0, N, 2N, ...) or a list of block indices"


def checkpointed_blocks(setting: Any, n_blocks: int) -> list[int]:
    """The block indices ``trainer.activation_checkpointing`` selects (sorted, negatives counted from the
    end), or a one-line :class:`ConfigError` naming the bad value and what is accepted."""
    if setting is None or isinstance(setting, bool):
        return list(range(n_blocks)) if setting else []
    if isinstance(setting, int):
        if setting < 1:
            raise ConfigError(f"{AC_KEY}={setting}: every N-th block needs N >= 1 (or false); choose {AC_CHOICES}")
        return list(range(0, n_blocks, setting))
    if isinstance(setting, Sequence) and not isinstance(setting, str):
        chosen = set()
        for item in setting:
            if isinstance(item, bool) or not isinstance(item, int) or not -n_blocks <= item < n_blocks:
                raise ConfigError(f"{AC_KEY}: {item!r} is not a block index of this {n_blocks}-block model "
                                  f"(valid: {-n_blocks} .. {n_blocks - 1})")
            chosen.add(item % n_blocks)
        return sorted(chosen)
    raise ConfigError(f"{AC_KEY}={setting!r} is not one of: {AC_CHOICES}")


def activation_checkpointing_problem(cfg: Any) -> str | None:
    """Why ``trainer.activation_checkpointing`` cannot be honoured for ``cfg``'s model, or None."""
    try:
        checkpointed_blocks(cfg.trainer.get("activation_checkpointing", False), int(cfg.model.n_layers))
    except ConfigError as exc:
        return str(exc)
    return None


class ActivationCheckpointing(ModelTransform):
    """The chosen blocks (all, or the indices in ``blocks``) keep only their inputs in forward and
    recompute their activations in backward (non-reentrant ``torch.utils.checkpoint``; dropout masks
    are replayed from the saved RNG state). Fewer blocks: less recomputation, more memory."""

    stage = Stage.CHECKPOINT_ACTIVATIONS

    def __init__(self, blocks: list[int] | None = None):
        super().__init__({"blocks": blocks})
        self.blocks = blocks

    def apply(self, model: nn.Module) -> nn.Module:
        def make_forward(inner: Callable[..., Any]) -> Callable[..., Any]:
            def forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
                if not torch.is_grad_enabled():  # eval / generation: nothing to save or recompute
                    return inner(self, *args, **kwargs)
                return torch.utils.checkpoint.checkpoint(inner, self, *args, use_reentrant=False, **kwargs)
            return forward

        blocks = transformer_blocks(model)
        for i in range(len(blocks)) if self.blocks is None else checkpointed_blocks(list(self.blocks), len(blocks)):
            _give_forward(blocks[i], "Checkpointed", make_forward, _CHECKPOINTED, "_plugformer_checkpointed")
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


__all__ = ["TRANSFORM_GROUPS", "ActivationCheckpointing", "CompileBlocks", "activation_checkpointing_problem",
           "apply_transforms", "checkpointed_blocks", "compile_problem", "component_transforms", "config_transforms",
           "transformer_blocks"]
