"""Config schemas of the built-in norms and MLPs (torch-free, so configs compose without torch)."""
from dataclasses import dataclass
from enum import Enum
from typing import Optional

from plugformer.config import bounded


class GeluApproximation(str, Enum):
    tanh = "tanh"  # GPT-2's tanh approximation
    none = "none"  # exact erf GELU


@dataclass
class LayerNormConfig:
    eps: float = bounded(1e-5, gt=0)


@dataclass
class RMSNormConfig:
    eps: float = bounded(1e-5, gt=0)  # added to the mean square before the reciprocal square root (Llama 2: 1e-5)


@dataclass
class GeluMLPConfig:
    hidden_mult: float = bounded(4.0, gt=0)  # hidden size = hidden_mult × d_model
    approximate: GeluApproximation = GeluApproximation.tanh


@dataclass
class ReluMLPConfig:
    hidden_mult: float = bounded(4.0, gt=0)  # hidden size = hidden_mult × d_model


@dataclass
class SwiGLUConfig:
    # hidden = multiple_of × ceil(⌊2/3 × hidden_mult × d_model⌋ / multiple_of), Llama's rule: about the
    # parameter count of a plain hidden_mult× MLP, rounded up to a hardware-friendly multiple
    hidden_mult: float = bounded(4.0, gt=0)
    multiple_of: int = bounded(256, ge=1)
    hidden_size: Optional[int] = bounded(None, ge=1)  # set to use exactly this hidden size instead of the rule
