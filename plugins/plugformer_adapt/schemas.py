"""Config schemas of the adapters (torch-free, so configs compose without importing peft)."""
from __future__ import annotations

from dataclasses import dataclass, field

from plugformer.config import bounded

#: every Linear of plugformer's blocks: attention projections and the MLP (the lm_head is tied by default)
DEFAULT_TARGETS = ["*.attn.qkv", "*.attn.proj_out", "*.mlp.proj_in", "*.mlp.proj_out"]
BIAS_CHOICES = ("none", "all", "lora_only")


@dataclass
class LoraConfig:
    """LoRA (Hu et al., 2021) through peft: W x + (alpha / r) · B A x on the chosen Linear layers."""

    # glob patterns over module names (``plugformer plugins`` lists none; see docs/plugins.md), e.g.
    # ``["*.attn.qkv"]`` for attention only; each must match at least one Linear layer
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    r: int = bounded(8, ge=1)  # rank of the update B A
    alpha: float = bounded(16.0, gt=0)  # scale: alpha / r (alpha / sqrt(r) with use_rslora)
    dropout: float = bounded(0.0, ge=0, lt=1)  # dropout on the adapter's input
    use_rslora: bool = False  # rank-stabilised scaling alpha / sqrt(r) (Kalajdzievski, 2023)
    use_dora: bool = False  # weight-decomposed LoRA: a learned magnitude per output (Liu et al., 2024)
    bias: str = "none"  # which biases train too: none | all | lora_only

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"r={self.r} must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1)")
        if self.bias not in BIAS_CHOICES:
            raise ValueError(f"bias='{self.bias}' is not one of: {', '.join(BIAS_CHOICES)}")
        if not self.target_modules:
            raise ValueError("target_modules is empty: name at least one Linear layer pattern, "
                             f"e.g. {DEFAULT_TARGETS}")


@dataclass
class QLoraConfig(LoraConfig):
    """QLoRA (Dettmers et al., 2023): the base's target layers in 4-bit NF4 (bitsandbytes), LoRA on top."""

    blocksize: int = bounded(64, ge=32, le=4096)  # weights per absmax scale
    double_quant: bool = True  # quantize the scales too (~0.37 bits per weight saved)
    compute_dtype: str = "float32"  # dtype the 4-bit weights are dequantized to: float32 | bfloat16 | float16
