"""Config schemas of the built-in norms and MLPs (torch-free, so configs compose without torch)."""
from dataclasses import dataclass


@dataclass
class LayerNormConfig:
    eps: float = 1e-5


@dataclass
class GeluMLPConfig:
    hidden_mult: float = 4.0  # hidden size = hidden_mult × d_model
    approximate: str = "tanh"  # GPT-2 uses the tanh approximation; "none" for exact erf GELU
