"""``lora`` and ``qlora`` adapters through peft on plugformer's own modules.

Target layers are chosen by glob patterns over module names (``*.attn.qkv``, ``blocks.0.mlp.*``), resolved
to the exact names peft receives. The adapter saves itself with peft's ``save_pretrained``
(``adapter_config.json`` + ``adapter_model.safetensors``), loads with ``PeftModel.from_pretrained`` and
merges with ``merge_and_unload``.

Several saved adapters load side by side under names (``load_named``: ``PeftModel.load_adapter`` per name)
and each batch row runs through its own (``route_rows``): peft's mixed-batch forward, whose per-row
``adapter_names`` argument a forward pre-hook, installed once per LoRA layer, hands to every layer while
a route is active (``"__base__"``: no adapter).
"""
from __future__ import annotations

import dataclasses
import fnmatch
import json
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from plugformer import get_registries, quiet_import
from plugformer.build import build
from plugformer.checkpoint import ADAPTER_MARKER_FILE
from plugformer import ConfigError, UnavailableError
from plugformer.interfaces import Adapter
from torch import nn

from plugformer_adapt import availability
from plugformer_adapt.schemas import LoraConfig, QLoraConfig

BASE_ROW = "__base__"  # peft's name, in a mixed batch, for a row that uses no adapter


def linear_names(model: nn.Module) -> list[str]:
    """Names of the Linear-like layers peft can adapt (``nn.Linear`` and bitsandbytes' ``Linear4bit``)."""
    return [n for n, m in model.named_modules()
            if isinstance(m, nn.Linear) or type(m).__name__ in ("Linear4bit", "Linear8bitLt")]


def match_targets(model: nn.Module, patterns: list[str]) -> list[str]:
    """Exact module names for the glob ``patterns``; a pattern matching no Linear layer is an error."""
    names = linear_names(model)
    chosen: list[str] = []
    for pattern in patterns:
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            raise ConfigError(f"adapter.target_modules: pattern '{pattern}' matches no Linear layer "
                              f"(the model's Linear layers: {shown})")
        chosen += [n for n in hits if n not in chosen]
    return chosen


def _require(check: Any, name: str) -> None:
    ok, reason = check()
    if not ok:
        raise UnavailableError(f"adapter {name} is unavailable: {reason}")
    quiet_import("peft")  # peft imports torchao when installed: its import-time warnings concern nothing here


class LoraAdapter(Adapter):
    """LoRA on the target layers; every other parameter is frozen."""

    entry_name = "lora"

    def __init__(self, config: LoraConfig | None = None):
        super().__init__(config or LoraConfig())
        self.peft_model: Any = None

    def peft_config(self, targets: list[str]) -> Any:
        import peft

        c = self.config
        return peft.LoraConfig(r=c.r, lora_alpha=c.alpha, lora_dropout=c.dropout, target_modules=targets,
                               use_rslora=c.use_rslora, use_dora=c.use_dora, bias=c.bias)

    def apply(self, model: nn.Module) -> nn.Module:
        _require(availability.lora, self.entry_name)
        from peft import get_peft_model

        targets = match_targets(model, list(self.config.target_modules))
        self.peft_model = get_peft_model(model, self.peft_config(targets))
        return self.peft_model

    def save_artifacts(self, directory: Path) -> None:
        """``directory/adapter/``: peft's own files, plus which plugformer adapter wrote them. Every rank
        gathers the adapter weights (sharded ones, under fsdp, are DTensors); rank 0 writes."""
        import torch.distributed as dist

        state = {k: v.full_tensor() if hasattr(v, "full_tensor") else v
                 for k, v in self.peft_model.state_dict().items() if "lora_" in k}
        if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
            return
        out = Path(directory) / self.ADAPTER_DIR
        self.peft_model.save_pretrained(str(out), state_dict={k: v.detach().cpu() for k, v in state.items()})
        (out / ADAPTER_MARKER_FILE).write_text(json.dumps(
            {"adapter": self.entry_name, "config": dataclasses.asdict(self.config)}, indent=1) + "\n")

    @classmethod
    def load_adapter(cls, model: nn.Module, directory: Path) -> nn.Module:
        _require(availability.lora, cls.entry_name)
        from peft import PeftModel

        return PeftModel.from_pretrained(model, str(directory))

    @classmethod
    def load_named(cls, model: nn.Module, directory: Path, name: str) -> nn.Module:
        """``model`` (a plain base, or what an earlier call returned) with the LoRA adapter in ``directory``
        added under ``name``. Every adapter is then inactive outside :meth:`route_rows` (the model computes
        the base), so no adapter is favoured by being loaded first. A failed load leaves ``model`` as it was."""
        _require(availability.lora, cls.entry_name)
        import peft

        _check_routable_name(name)
        first = not isinstance(model, peft.PeftModel)
        if first and _lora_layers(model):
            raise ConfigError("adapters load side by side only onto a plain base model, but this one already carries "
                              "a LoRA adapter (load its checkpoint without adapter=, or merge it first)")
        if not first and model not in _ROUTERS:
            raise ConfigError("adapters load side by side only onto a plain base model, but this one already carries "
                              "an adapter applied the single-adapter way (adapter=DIR)")
        if not first and name in model.peft_config:
            raise ConfigError(f"adapter name '{name}' is already loaded; loaded: {', '.join(model.peft_config)}")
        config = peft.PeftConfig.from_pretrained(str(directory))
        if not isinstance(config, peft.LoraConfig):
            raise ConfigError(f"adapter '{directory}' is a {config.peft_type} adapter, not LoRA")
        if config.use_dora:
            raise ConfigError(f"adapter '{directory}' uses DoRA, which peft cannot route per batch row; merge it "
                              "(plugformer merge) or serve it alone (adapter=DIR)")
        config.inference_mode = True
        peft_model = peft.PeftModel(model, config, adapter_name=name) if first else model
        try:
            peft_model.load_adapter(str(directory), adapter_name=name, is_trainable=False)
        except BaseException:
            if first:
                peft_model.unload()  # the LoRA layers out again: the base as it was
            else:
                if name in peft_model.peft_config:
                    peft_model.delete_adapter(name)  # which may make another adapter active: none again
                _deactivate(_lora_layers(peft_model))
            raise
        layers = _lora_layers(peft_model)
        _deactivate(layers)
        router = _ROUTERS.get(peft_model) or _RowRouter()
        router.attach(layers)
        for module in (peft_model, peft_model.get_base_model(), *layers):
            _ROUTERS[module] = router
        return peft_model.eval()

    @classmethod
    @contextmanager
    def route_rows(cls, model: nn.Module, names: Sequence[str | None]) -> Iterator[None]:
        """Row ``i`` of each forward pass inside runs through adapter ``names[i]`` (None: the base): every
        LoRA layer of ``model`` (what :meth:`load_named` returned, or the base it wraps) hands peft's per-row
        ``adapter_names`` to its mixed-batch forward. A forward pass of another batch size inside is an
        error, not a silent misroute. Entering costs O(1): the hooks were installed by :meth:`load_named`."""
        rows = [BASE_ROW if n is None else n for n in names]
        router = _router_of(model)
        loaded = router.names if router is not None else frozenset()
        unknown = sorted({n for n in rows if n != BASE_ROW} - loaded)
        if unknown:
            raise ConfigError(f"unknown adapter {', '.join(map(repr, unknown))}; loaded adapters: "
                              f"{', '.join(sorted(loaded)) or 'none'}")
        if router is None or all(n == BASE_ROW for n in rows):  # outside routing the model computes the base
            yield
            return
        outer, router.rows = router.rows, rows
        try:
            yield
        finally:
            router.rows = outer

    @staticmethod
    def merge(model: nn.Module) -> nn.Module:
        """``W + scale · B A`` written into each target layer; the peft wrappers removed."""
        if not hasattr(model, "merge_and_unload"):
            raise ConfigError(f"{type(model).__name__} carries no peft adapter to merge")
        return model.merge_and_unload()


class QLoraAdapter(LoraAdapter):
    """The target layers quantized to NF4 by the registry's ``nf4`` quantizer, LoRA on top of them.

    Merging dequantizes the 4-bit base layers first, so the merged checkpoint is full precision; the saved
    adapter alone loads (unmerged) onto the full-precision base, as peft does for QLoRA adapters.
    """

    entry_name = "qlora"

    def __init__(self, config: QLoraConfig | None = None):
        super().__init__(config or QLoraConfig())

    def apply(self, model: nn.Module) -> nn.Module:
        _require(availability.qlora, self.entry_name)
        from peft import get_peft_model

        c = self.config
        targets = match_targets(model, list(c.target_modules))
        nf4 = build(get_registries(), "quantizer", {"name": "nf4", "modules": targets, "blocksize": c.blocksize,
                                                    "double_quant": c.double_quant, "compute_dtype": c.compute_dtype})
        model = nf4.apply(model)
        self.peft_model = get_peft_model(model, self.peft_config(targets))
        return self.peft_model

    @staticmethod
    def merge(model: nn.Module) -> nn.Module:
        for name, module in list(model.named_modules()):
            if type(module).__name__ == "Linear4bit":
                parent, _, child = name.rpartition(".")
                setattr(model.get_submodule(parent) if parent else model, child, _dequantize(module))
        return LoraAdapter.merge(model)


class _RowRouter:
    """The per-row adapter names of the routed forward passes of one model, handed by a forward pre-hook
    to each of its LoRA layers as peft's ``adapter_names`` (no routing: the hooks change nothing)."""

    def __init__(self) -> None:
        self.rows: list[str] | None = None
        self.names: frozenset[str] = frozenset()
        self._handles: list[Any] = []

    def attach(self, layers: list[nn.Module]) -> None:
        """Hook ``layers`` (every LoRA layer of the model, after an adapter was added) and learn their adapters."""
        for handle in self._handles:
            handle.remove()
        self._handles = [m.register_forward_pre_hook(self._hand_rows, with_kwargs=True) for m in layers]
        self.names = frozenset().union(*(set(m.lora_A) | set(m.lora_embedding_A) for m in layers))

    def _hand_rows(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        rows = self.rows
        if rows is None:
            return None
        x = args[0] if args else kwargs.get("x")
        if x is not None and x.shape[0] != len(rows):
            raise ConfigError(f"a forward pass of batch size {x.shape[0]} inside a routing for {len(rows)} rows; "
                              "route each forward pass with one adapter name (or None) per row")
        return args, {**kwargs, "adapter_names": rows}


#: the router of each model load_named built, under the peft wrapper, the base it wraps and each LoRA layer
_ROUTERS: weakref.WeakKeyDictionary[nn.Module, _RowRouter] = weakref.WeakKeyDictionary()


def _router_of(model: nn.Module) -> _RowRouter | None:
    """``model``'s router: looked up directly, else (another wrapper around it) through its first LoRA layer."""
    router = _ROUTERS.get(model)
    if router is None:
        router = next((_ROUTERS[m] for m in model.modules() if m in _ROUTERS), None)
        if router is not None:
            _ROUTERS[model] = router
    return router


def _lora_layers(model: nn.Module) -> list[nn.Module]:
    """The peft LoRA layers inside ``model``."""
    from peft.tuners.lora import LoraLayer

    return [m for m in model.modules() if isinstance(m, LoraLayer)]


def _deactivate(layers: list[nn.Module]) -> None:
    """No active adapter in ``layers``: outside a route they compute the base; a row uses an adapter only
    when routed to it (peft's mixed-batch forward reads every loaded adapter, active or not)."""
    for layer in layers:
        layer.set_adapter([], inference_mode=True)


def _check_routable_name(name: str) -> None:
    """A name peft can key an adapter by (its layers hold adapters in ``ModuleDict``s) and a row can choose."""
    if name == BASE_ROW:
        raise ConfigError(f"adapter name '{BASE_ROW}' is reserved (peft's name for rows without an adapter)")
    if "." in name:
        raise ConfigError(f"adapter name '{name}' contains '.', which peft cannot key an adapter by; "
                          "use letters, digits, '-' or '_'")


def _dequantize(module: nn.Module) -> nn.Linear:
    import bitsandbytes.functional as F

    weight = F.dequantize_4bit(module.weight.data, module.weight.quant_state).float()
    linear = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None, device=weight.device)
    linear.weight.data.copy_(weight)
    if module.bias is not None:
        linear.bias.data.copy_(module.bias.data.float())
    return linear


__all__ = ["LoraAdapter", "QLoraAdapter", "linear_names", "match_targets"]
