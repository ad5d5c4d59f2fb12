"""Config schemas of the quantizers (torch-free)."""
from __future__ import annotations

from dataclasses import dataclass, field

from plugformer.config import bounded

COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


def _all_linear() -> list[str]:
    return ["*"]


@dataclass
class LinearQuantConfig:
    """Which Linear layers a weight quantizer replaces: glob patterns over module names. A Linear that
    shares its weight with an embedding (the tied ``lm_head``) stays as it is."""

    modules: list[str] = field(default_factory=_all_linear)


@dataclass
class NF4Config(LinearQuantConfig):
    """bitsandbytes 4-bit NormalFloat: one absmax scale per ``blocksize`` weights."""

    blocksize: int = bounded(64, ge=32, le=4096)  # a power of two
    double_quant: bool = True  # quantize the absmax scales too (8-bit, blocks of 256)
    compute_dtype: str = "float32"  # dequantized dtype of the matmul: float32 | bfloat16 | float16

    def __post_init__(self) -> None:
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"compute_dtype='{self.compute_dtype}' is not one of: {', '.join(COMPUTE_DTYPES)}")
        if self.blocksize not in (32, 64, 128, 256, 512, 1024, 2048, 4096):
            raise ValueError(f"blocksize={self.blocksize} is not a bitsandbytes block size "
                             "(32, 64, 128, ..., 4096)")
