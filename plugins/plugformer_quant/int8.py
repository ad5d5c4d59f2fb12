"""torchao int8 quantizers: ``int8`` (weight-only) and ``int8_dynamic`` (int8 weights and per-token
dynamically quantized int8 activations).

Saved through torchao's own safetensors support (``torchao.prototype.safetensors``): the int8 data and
scales become plain tensors, the tensor-subclass attributes JSON metadata; no pickle.
"""
from __future__ import annotations

from abc import abstractmethod

import json
from typing import Any

import torch
from plugformer import quiet_import
from plugformer import UnavailableError
from plugformer.interfaces import Quantizer
from torch import nn

from plugformer_quant import availability
from plugformer_quant.schemas import LinearQuantConfig
from plugformer_quant.state import (
    TIED_KEY,
    restore_tied,
    retie,
    select_linears,
    split_tied,
)

TORCHAO_META = "torchao"  # safetensors metadata key holding torchao's own (JSON) metadata


def _require_torchao() -> None:
    """Raise when torchao is missing; else import it without its import-time warnings (kernels built for
    other GPUs, torch's pytree deprecation notes), which concern nothing this process does."""
    ok, reason = availability.torchao()
    if not ok:
        raise UnavailableError(f"quantizer int8 is unavailable: {reason}")
    quiet_import("torchao")


class _TorchaoInt8(Quantizer):
    def __init__(self, config: LinearQuantConfig | None = None):
        super().__init__(config or LinearQuantConfig())

    @abstractmethod
    def ao_config(self) -> Any:
        """torchao's config object for ``quantize_`` (weight-only or dynamic int8)."""

    def apply(self, model: nn.Module) -> nn.Module:
        """Quantize the chosen Linear weights in place (``torchao.quantization.quantize_``)."""
        _require_torchao()
        from torchao.quantization import quantize_

        chosen = {id(m) for _, m in select_linears(model, list(self.config.modules), "quantizer int8")}
        quantize_(model, self.ao_config(), filter_fn=lambda module, fqn: id(module) in chosen)
        for p in model.parameters():  # integer weights do not train
            p.requires_grad_(False)
        return model

    def quantized_state(self, model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        _require_torchao()
        from torchao.prototype.safetensors.safetensors_support import (
            flatten_tensor_state_dict,
        )

        unique, tied = split_tied(model.state_dict())
        state = {k: (v.detach() if type(v) is torch.Tensor else v) for k, v in unique.items()}
        tensors, ao_meta = flatten_tensor_state_dict(state)
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        return tensors, {TORCHAO_META: json.dumps(ao_meta), TIED_KEY: json.dumps(tied)}

    def load_quantized(self, model: nn.Module, tensors: dict[str, torch.Tensor],
                       metadata: dict[str, str]) -> nn.Module:
        _require_torchao()
        from torchao.prototype.safetensors.safetensors_support import (
            unflatten_tensor_state_dict,
        )

        model = self.apply(model)
        state, leftover = unflatten_tensor_state_dict(tensors, json.loads(metadata[TORCHAO_META]))
        if leftover:
            raise ValueError(f"quantized checkpoint holds tensors torchao did not claim: {sorted(leftover)[:5]}")
        model.load_state_dict(restore_tied(state, metadata), assign=True)
        retie(model, metadata)
        return model


class Int8WeightOnly(_TorchaoInt8):
    """int8 weights, one scale per output row; activations stay in floating point."""

    def ao_config(self) -> Any:
        from torchao.quantization import Int8WeightOnlyConfig

        return Int8WeightOnlyConfig()


class Int8Dynamic(_TorchaoInt8):
    """int8 weights and activations (per-token scales computed at run time): int8 × int8 matmuls."""

    def ao_config(self) -> Any:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig

        return Int8DynamicActivationInt8WeightConfig()


__all__ = ["Int8Dynamic", "Int8WeightOnly"]
