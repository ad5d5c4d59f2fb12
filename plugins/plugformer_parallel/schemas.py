"""Config schemas of the built-in parallel strategies."""
from dataclasses import dataclass
from typing import Optional


@dataclass
class SingleConfig:
    pass


@dataclass
class DDPConfig:
    backend: Optional[str] = None  # None: nccl on CUDA, gloo on CPU
    timeout_s: int = 600
    find_unused_parameters: bool = False
    bucket_cap_mb: int = 25
