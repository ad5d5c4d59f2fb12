"""Optimizer factories over torch.optim; each honours its config's ``no_decay`` parameter kinds through
the core's :func:`plugformer.interfaces.param_groups`."""
from __future__ import annotations

import torch
from torch import nn

from plugformer import UnavailableError
from plugformer.interfaces import param_groups
from plugformer_training import availability
from plugformer_training.schemas import AdafactorConfig, AdamConfig, AdamWConfig, SGDConfig


def _fused(requested: bool | None, model: nn.Module) -> bool | None:
    """``fused=`` for Adam/AdamW: the config's choice, else fused when every parameter is on CPU or CUDA
    (torch ≥ 2.4 has fused kernels for both). None lets torch pick its default (foreach) kernel."""
    if requested is None:
        requested = all(p.device.type in ("cuda", "cpu") for p in model.parameters())
    return requested or None


def adamw(config: AdamWConfig, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay); the fused implementation unless ``fused=false``."""
    return torch.optim.AdamW(param_groups(model, config.weight_decay, config.no_decay), lr=config.lr,
                             betas=tuple(config.betas), eps=config.eps, fused=_fused(config.fused, model))


def adam(config: AdamConfig, model: nn.Module) -> torch.optim.Optimizer:
    """Adam (weight decay as an L2 gradient term); the fused implementation unless ``fused=false``."""
    return torch.optim.Adam(param_groups(model, config.weight_decay, config.no_decay), lr=config.lr,
                            betas=tuple(config.betas), eps=config.eps, fused=_fused(config.fused, model))


def sgd(config: SGDConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD with (Nesterov) momentum: the cheapest optimizer state, a baseline for the others."""
    if config.nesterov and config.momentum <= 0:
        raise ValueError(f"optimizer.nesterov=true needs momentum > 0, got momentum={config.momentum}")
    return torch.optim.SGD(param_groups(model, config.weight_decay, config.no_decay), lr=config.lr,
                           momentum=config.momentum, nesterov=config.nesterov)


def adafactor(config: AdafactorConfig, model: nn.Module) -> torch.optim.Optimizer:
    """Adafactor: factored second moments, so optimizer memory grows with rows + columns, not their product."""
    ok, reason = availability.adafactor()
    if not ok:
        raise UnavailableError(f"optimizer 'adafactor' is unavailable: {reason}")
    if len(config.eps) != 2:
        raise ValueError(f"optimizer.eps must be [eps1, eps2] (eps1 may be null), got {list(config.eps)}")
    return torch.optim.Adafactor(param_groups(model, config.weight_decay, config.no_decay), lr=config.lr,
                                 beta2_decay=config.beta2_decay, eps=tuple(config.eps), d=config.d)
