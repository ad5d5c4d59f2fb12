"""``lora`` and ``qlora`` adapters through peft on plugformer's own modules.

Target layers are chosen by glob patterns over module names (``*.attn.qkv``, ``blocks.0.mlp.*``), resolved
to the exact names peft receives. The adapter saves itself with peft's ``save_pretrained``
(``adapter_config.json`` + ``adapter_model.safetensors``), loads with ``PeftModel.from_pretrained`` and
merges with ``merge_and_unload``.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import json
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


def _dequantize(module: nn.Module) -> nn.Linear:
    import bitsandbytes.functional as F

    weight = F.dequantize_4bit(module.weight.data, module.weight.quant_state).float()
    linear = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None, device=weight.device)
    linear.weight.data.copy_(weight)
    if module.bias is not None:
        linear.bias.data.copy_(module.bias.data.float())
    return linear


__all__ = ["LoraAdapter", "QLoraAdapter", "linear_names", "match_targets"]
