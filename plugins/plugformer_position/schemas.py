"""Config schemas of the built-in positional encodings (torch-free, so configs compose without torch)."""
from dataclasses import dataclass
from enum import Enum
from typing import Optional

from plugformer.config import bounded


class RopeScaling(str, Enum):
    """How rope stretches to contexts longer than it was trained on."""

    linear = "linear"  # position interpolation: angles of position p are those of p / factor
    ntk = "ntk"  # NTK-aware: base grows to base · factor^(d/(d-2)), high frequencies barely move


@dataclass
class LearnedPositionConfig:
    init_std: float = bounded(0.02, ge=0)  # GPT-2 initialises position embeddings with N(0, 0.02²)


@dataclass
class SinusoidalPositionConfig:
    base: float = bounded(10000.0, gt=1)  # wavelengths form a geometric progression from 2π to base·2π


@dataclass
class RopeConfig:
    base: float = bounded(10000.0, gt=1)  # rotation frequencies are base^(-2i/d); Llama 3 uses 500000
    # rotate the first fraction of head_dim (GPT-NeoX 0.25, Phi 0.4)
    partial_rotary_factor: float = bounded(1.0, gt=0, le=1)
    scaling: Optional[RopeScaling] = None  # None: plain rope; linear or ntk context extension
    scaling_factor: float = bounded(1.0, gt=0)  # how many times longer than the trained context to reach


@dataclass
class AlibiConfig:
    max_bias: float = bounded(8.0, gt=0)  # slopes are 2^(-max_bias·h/n) for head h of n (the paper's 8)
