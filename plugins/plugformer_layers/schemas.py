"""Config schemas of the built-in norms and MLPs (torch-free, so configs compose without torch)."""
from dataclasses import dataclass
from enum import Enum


class GeluApproximation(str, Enum):
    tanh = "tanh"  # GPT-2's tanh approximation
    none = "none"  # exact erf GELU


@dataclass
class LayerNormConfig:
    eps: float = 1e-5


@dataclass
class GeluMLPConfig:
    hidden_mult: float = 4.0  # hidden size = hidden_mult × d_model
    approximate: GeluApproximation = GeluApproximation.tanh
