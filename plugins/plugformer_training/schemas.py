"""Config schemas of the built-in training components."""
from dataclasses import dataclass, field
from typing import List, Optional


@dataclass
class CLMConfig:
    label_smoothing: float = 0.0


@dataclass
class AdamWConfig:
    lr: float = 1e-3
    betas: List[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    weight_decay: float = 0.1
    fused: Optional[bool] = None  # None: use the fused kernel when torch offers it for the device


@dataclass
class SGDConfig:
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0


@dataclass
class CosineConfig:
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1


@dataclass
class ConstantConfig:
    warmup_steps: int = 0
