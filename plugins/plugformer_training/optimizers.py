"""Optimizer factories over torch.optim."""
from __future__ import annotations

import torch
from torch import nn

from plugformer.interfaces import param_groups
from plugformer_training.schemas import AdamWConfig, SGDConfig


def _on_cuda_or_cpu(model: nn.Module) -> bool:
    return all(p.device.type in ("cuda", "cpu") for p in model.parameters())


def adamw(config: AdamWConfig, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW; the fused implementation (CPU and CUDA in torch ≥ 2.4) unless ``fused=false``."""
    fused = _on_cuda_or_cpu(model) if config.fused is None else config.fused
    return torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr,
                             betas=tuple(config.betas), eps=config.eps, fused=fused or None)


def sgd(config: SGDConfig, model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(param_groups(model, config.weight_decay), lr=config.lr, momentum=config.momentum,
                           nesterov=config.nesterov)
