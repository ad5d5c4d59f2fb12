"""Config schemas of the built-in parallel strategies."""
from dataclasses import dataclass
from typing import Optional


@dataclass
class SingleConfig:
    """``single`` has no options: one process, one device."""


@dataclass
class DDPConfig:
    backend: Optional[str] = None  # None: nccl on CUDA, gloo on CPU
    timeout_s: int = 600
    find_unused_parameters: bool = False
    bucket_cap_mb: int = 25


DTYPES = ("fp32", "float32", "bf16", "bfloat16", "fp16", "float16")


@dataclass
class FSDPConfig:
    backend: Optional[str] = None  # None: nccl on CUDA, gloo on CPU
    timeout_s: int = 600
    reshard_after_forward: bool = True  # free gathered block weights after forward (ZeRO-3); False: ZeRO-2-like
    param_dtype: Optional[str] = None  # mixed precision: dtype of gathered params for compute (bf16, fp16, fp32)
    reduce_dtype: Optional[str] = None  # dtype of gradient reduce-scatter (e.g. fp32 with bf16 params)
    cpu_offload: bool = False  # keep sharded params, grads and optimizer state on the CPU

    def __post_init__(self) -> None:
        for key in ("param_dtype", "reduce_dtype"):
            value = getattr(self, key)
            if value is not None and value not in DTYPES:
                raise ValueError(f"parallel.{key}={value!r} is not a dtype; valid: {', '.join(DTYPES)} (or null)")


@dataclass
class TPConfig:
    backend: Optional[str] = None  # None: nccl on CUDA, gloo on CPU
    timeout_s: int = 600
