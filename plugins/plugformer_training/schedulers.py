"""Learning-rate schedules as LambdaLR multipliers.

Each multiplier is a callable object holding only plain numbers and strings: ``LambdaLR.state_dict()``
stores its ``__dict__``, and checkpoints keep nothing but tensors and JSON data.
"""
from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from plugformer_training.schemas import ConstantConfig, CosineConfig, LinearConfig, WSDConfig

SHAPES = ("linear", "cosine")


def _check(warmup: int, min_ratio: float) -> None:
    if warmup < 0:
        raise ValueError(f"scheduler.warmup_steps must be >= 0, got {warmup}")
    if not 0.0 <= min_ratio <= 1.0:
        raise ValueError(f"scheduler.min_lr_ratio must be in [0, 1], got {min_ratio}")


def _fall(progress: float, min_ratio: float, shape: str) -> float:
    """Multiplier ``progress`` (0→1) of the way from 1 down to ``min_ratio`` along ``shape``."""
    progress = min(1.0, max(0.0, progress))
    fraction = 1.0 - progress if shape == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_ratio + (1.0 - min_ratio) * fraction


class WarmupConstant:
    """Multiplier: linear 0→1 over ``warmup`` steps, then 1."""

    def __init__(self, warmup: int):
        _check(warmup, 0.0)
        self.warmup = warmup

    def __call__(self, step: int) -> float:
        return (step + 1) / self.warmup if step < self.warmup else 1.0


class WarmupDecay(WarmupConstant):
    """Multiplier: linear warmup over ``warmup`` steps, then ``shape`` decay 1→``min_ratio`` until ``total``."""

    def __init__(self, warmup: int, total: int, min_ratio: float, shape: str = "cosine"):
        super().__init__(warmup)
        _check(warmup, min_ratio)
        self.total, self.min_ratio, self.shape = total, min_ratio, shape

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return super().__call__(step)
        return _fall((step - self.warmup) / max(1, self.total - self.warmup), self.min_ratio, self.shape)


class WarmupCosine(WarmupDecay):
    """Multiplier: linear 0→1 over ``warmup`` steps, cosine 1→``min_ratio`` until ``total``."""

    def __init__(self, warmup: int, total: int, min_ratio: float):
        super().__init__(warmup, total, min_ratio, "cosine")


class WarmupStableDecay(WarmupConstant):
    """Multiplier: warmup, 1 until ``decay_start``, then ``shape`` decay to ``min_ratio`` at ``total``.

    The warmup-stable-decay (trapezoidal) schedule: a run can be extended or branched from any stable
    checkpoint, because only the final decay depends on the total length.
    """

    def __init__(self, warmup: int, total: int, decay_fraction: float, min_ratio: float, shape: str):
        super().__init__(warmup)
        _check(warmup, min_ratio)
        if not 0.0 <= decay_fraction <= 1.0:
            raise ValueError(f"scheduler.decay_fraction must be in [0, 1], got {decay_fraction}")
        self.total, self.min_ratio, self.shape = total, min_ratio, shape
        self.decay_start = max(warmup, total - round(decay_fraction * total))

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return super().__call__(step)
        if step < self.decay_start:
            return 1.0
        return _fall((step - self.decay_start) / max(1, self.total - self.decay_start), self.min_ratio, self.shape)


def _shape(value: object) -> str:
    shape = str(getattr(value, "value", value))
    if shape not in SHAPES:
        raise ValueError(f"scheduler.decay_shape must be one of {', '.join(SHAPES)}, got {shape!r}")
    return shape


def cosine(config: CosineConfig, optimizer: torch.optim.Optimizer, max_steps: int) -> LambdaLR:
    """Warmup, then cosine decay over the rest of the run (GPT-3, Chinchilla)."""
    return LambdaLR(optimizer, WarmupCosine(config.warmup_steps, max_steps, config.min_lr_ratio))


def linear(config: LinearConfig, optimizer: torch.optim.Optimizer, max_steps: int) -> LambdaLR:
    """Warmup, then linear decay over the rest of the run (BERT, many fine-tuning recipes)."""
    return LambdaLR(optimizer, WarmupDecay(config.warmup_steps, max_steps, config.min_lr_ratio, "linear"))


def wsd(config: WSDConfig, optimizer: torch.optim.Optimizer, max_steps: int) -> LambdaLR:
    """Warmup, a constant plateau, then decay over the last ``decay_fraction`` of the run."""
    return LambdaLR(optimizer, WarmupStableDecay(config.warmup_steps, max_steps, config.decay_fraction,
                                                 config.min_lr_ratio, _shape(config.decay_shape)))


def constant(config: ConstantConfig, optimizer: torch.optim.Optimizer, max_steps: int) -> LambdaLR:
    """Warmup, then the configured learning rate throughout."""
    return LambdaLR(optimizer, WarmupConstant(config.warmup_steps))
