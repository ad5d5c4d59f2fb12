"""Config schemas of the built-in positional encodings (torch-free, so configs compose without torch)."""
from dataclasses import dataclass


@dataclass
class LearnedPositionConfig:
    init_std: float = 0.02  # GPT-2 initialises position embeddings with N(0, 0.02²)


@dataclass
class SinusoidalPositionConfig:
    base: float = 10000.0  # wavelengths form a geometric progression from 2π to base·2π


@dataclass
class RopeConfig:
    base: float = 10000.0  # rotation frequencies are base^(-2i/head_dim); Llama 3 uses 500000
