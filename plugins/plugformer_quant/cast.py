"""Casts: ``bf16`` and ``fp16`` store floating weights in 16 bits; ``none`` keeps fp32."""
from __future__ import annotations

import torch
from torch import nn

from plugformer_quant.state import PlainStateQuantizer


class NoQuantizer(PlainStateQuantizer):
    """Nothing changes: full-precision weights."""

    def apply(self, model: nn.Module) -> nn.Module:
        return model


class _Cast(PlainStateQuantizer):
    dtype: torch.dtype = torch.float32

    def apply(self, model: nn.Module) -> nn.Module:
        """Cast floating parameters and buffers to :attr:`dtype`. When an adapter has frozen the base
        (some parameters do not train), only the frozen ones are cast: adapter weights keep fp32.
        Floating buffers (rotary tables) follow the weights, so activations keep one dtype."""
        params = list(model.parameters())
        frozen_only = any(not p.requires_grad for p in params) and any(p.requires_grad for p in params)
        for p in params:
            if p.is_floating_point() and not (frozen_only and p.requires_grad):
                p.data = p.data.to(self.dtype)
        for module in model.modules():
            for key, buf in module.named_buffers(recurse=False):
                if buf is not None and buf.is_floating_point():
                    setattr(module, key, buf.to(self.dtype))
        return model


class BF16(_Cast):
    """bfloat16 weights: fp32's range, 8 bits of mantissa."""

    dtype = torch.bfloat16


class FP16(_Cast):
    """float16 weights: more mantissa than bf16, range up to 65504."""

    dtype = torch.float16
