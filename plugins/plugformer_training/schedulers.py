"""Learning-rate schedules as LambdaLR multipliers (callable objects, so state dicts stay plain data)."""
from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from plugformer_training.schemas import ConstantConfig, CosineConfig


class WarmupCosine:
    """Multiplier: linear 0→1 over ``warmup`` steps, cosine 1→``min_ratio`` until ``total``."""

    def __init__(self, warmup: int, total: int, min_ratio: float):
        self.warmup, self.total, self.min_ratio = warmup, total, min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class WarmupConstant:
    """Multiplier: linear 0→1 over ``warmup`` steps, then 1."""

    def __init__(self, warmup: int):
        self.warmup = warmup

    def __call__(self, step: int) -> float:
        return (step + 1) / self.warmup if step < self.warmup else 1.0


def cosine(config: CosineConfig, optimizer: torch.optim.Optimizer, max_steps: int) -> LambdaLR:
    return LambdaLR(optimizer, WarmupCosine(config.warmup_steps, max_steps, config.min_lr_ratio))


def constant(config: ConstantConfig, optimizer: torch.optim.Optimizer, max_steps: int) -> LambdaLR:
    return LambdaLR(optimizer, WarmupConstant(config.warmup_steps))
