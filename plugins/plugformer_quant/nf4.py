"""``nf4``: bitsandbytes 4-bit NormalFloat Linear layers (``Linear4bit``), the base format of QLoRA.

bitsandbytes stores a 4-bit weight as packed bytes plus its quantization state (absmax scales, the
code book, nested scales); all plain tensors, so the state dict goes to safetensors unchanged. Loading
them back needs ``Params4bit.from_prequantized``: every replaced layer gets a state-dict pre-hook that
does it, so a plain ``load_state_dict`` (resume, generate, quantized checkpoints) restores the saved
4-bit weights exactly.
"""
from __future__ import annotations

from typing import Any

import torch
from plugformer import UnavailableError
from torch import nn

from plugformer_quant import availability
from plugformer_quant.schemas import NF4Config
from plugformer_quant.state import PlainStateQuantizer, replace_module, select_linears


def _load_prequantized(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """State-dict pre-hook of a ``Linear4bit``: rebuild its weight from saved packed data + quant state."""
    import bitsandbytes as bnb

    key = prefix + "weight"
    stats = {k[len(key) + 1:]: state_dict.pop(k) for k in [k for k in state_dict if k.startswith(key + ".")]}
    if key not in state_dict or not stats:
        return
    data = state_dict[key]
    module.weight = bnb.nn.Params4bit.from_prequantized(data=data, quantized_stats=stats, requires_grad=False,
                                                        device=module.weight.device)
    state_dict[key] = module.weight.data  # the default loader then copies the same bytes in place


def to_linear4bit(linear: nn.Linear, config: NF4Config) -> nn.Module:
    """A ``bnb.nn.Linear4bit`` holding ``linear``'s weight quantized to NF4 (bias kept, frozen)."""
    import bitsandbytes as bnb

    dtype = getattr(torch, config.compute_dtype)
    q = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                          compute_dtype=dtype, compress_statistics=config.double_quant, quant_type="nf4")
    q.weight = bnb.nn.Params4bit(linear.weight.data.float(), requires_grad=False, blocksize=config.blocksize,
                                 compress_statistics=config.double_quant, quant_type="nf4")
    if linear.bias is not None:
        q.bias = nn.Parameter(linear.bias.data.clone(), requires_grad=False)
    q = q.to(linear.weight.device)  # Params4bit quantizes when moved to its device
    if q.weight.quant_state is None:  # already on that device: quantize explicitly
        q.weight = q.weight._quantize(linear.weight.device)
    q._register_load_state_dict_pre_hook(_load_prequantized, with_module=True)
    return q


class NF4(PlainStateQuantizer):
    """Replaces the chosen ``nn.Linear`` layers by 4-bit NF4 ``Linear4bit`` layers (frozen)."""

    def __init__(self, config: NF4Config | None = None):
        super().__init__(config or NF4Config())

    def apply(self, model: nn.Module) -> nn.Module:
        ok, reason = availability.bitsandbytes()
        if not ok:
            raise UnavailableError(f"quantizer nf4 is unavailable: {reason}")
        for name, linear in select_linears(model, list(self.config.modules), "quantizer nf4"):
            replace_module(model, name, to_linear4bit(linear, self.config))
        return model


__all__ = ["NF4", "to_linear4bit"]
