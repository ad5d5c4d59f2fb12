"""Config schemas of the built-in parallel strategies."""
from dataclasses import dataclass
from typing import Optional

from plugformer.config import bounded


@dataclass
class SingleConfig:
    """``single`` has no options: one process, one device."""


@dataclass
class DDPConfig:
    backend: Optional[str] = None  # None: nccl on CUDA, gloo on CPU
    timeout_s: int = bounded(600, ge=1)
    find_unused_parameters: bool = False
    bucket_cap_mb: int = bounded(25, ge=1)


DTYPES = ("fp32", "float32", "bf16", "bfloat16", "fp16", "float16")


@dataclass
class FSDPConfig:
    backend: Optional[str] = None  # None: nccl on CUDA, gloo on CPU
    timeout_s: int = bounded(600, ge=1)
    reshard_after_forward: bool = True  # free gathered block weights after forward (ZeRO-3); False: ZeRO-2-like
    param_dtype: Optional[str] = None  # mixed precision: dtype of gathered params for compute (bf16, fp16, fp32)
    reduce_dtype: Optional[str] = None  # dtype of gradient reduce-scatter (e.g. fp32 with bf16 params)
    cpu_offload: bool = False  # keep sharded params, grads and optimizer state on the CPU
    async_checkpoint: bool = False  # DCP shards staged in memory, written in the background; committed when done

    def __post_init__(self) -> None:
        for key in ("param_dtype", "reduce_dtype"):
            value = getattr(self, key)
            if value is not None and value not in DTYPES:
                raise ValueError(f"parallel.{key}={value!r} is not a dtype; valid: {', '.join(DTYPES)} (or null)")


@dataclass
class TPConfig:
    backend: Optional[str] = None  # None: nccl on CUDA, gloo on CPU
    timeout_s: int = bounded(600, ge=1)
    sequence_parallel: bool = False  # norms and dropout on sequence shards; reduce-scatter/all-gather, not all-reduce
    vocab_parallel: bool = False  # embedding and LM head split by vocabulary rows (logits gathered for the loss)
    async_checkpoint: bool = False  # DCP shards staged in memory, written in the background; committed when done


@dataclass
class FSDPTPConfig:
    """2-D parallel: ``tp`` ranks split each layer (tensor parallel), world/tp replicas shard the rest (FSDP2)."""

    backend: Optional[str] = None  # None: nccl on CUDA, gloo on CPU
    timeout_s: int = bounded(600, ge=1)
    # tensor-parallel degree (ranks per model replica); the data-parallel degree is world / tp
    tp: int = bounded(2, ge=1)
    sequence_parallel: bool = False  # as for parallel=tp
    vocab_parallel: bool = False  # as for parallel=tp
    reshard_after_forward: bool = True  # as for parallel=fsdp
    param_dtype: Optional[str] = None  # as for parallel=fsdp
    reduce_dtype: Optional[str] = None  # as for parallel=fsdp
    cpu_offload: bool = False  # as for parallel=fsdp (device=cuda only)
    async_checkpoint: bool = False  # as for parallel=fsdp

    def __post_init__(self) -> None:
        if not isinstance(self.tp, int) or self.tp < 1:
            raise ValueError(f"parallel.tp={self.tp!r} must be a positive whole number of ranks (e.g. 2)")
        FSDPConfig.__post_init__(self)  # the dtype names


@dataclass
class DeepSpeedConfig:
    """DeepSpeed ZeRO data parallel: the engine partitions optimizer state (stage 1), + gradients (2),
    + parameters (3) across ranks; plugformer's optimizer, scheduler, clipping and grad_accum still apply."""

    backend: Optional[str] = None  # noqa: UP045 (OmegaConf schemas need Optional) None: nccl on CUDA, gloo on CPU
    timeout_s: int = bounded(600, ge=1)
    # ZeRO stage: 1 (optimizer state), 2 (+ gradients) or 3 (+ parameters) partitioned
    stage: int = bounded(3, ge=1, le=3)
    overlap_comm: bool = False  # overlap gradient reduction with backward (DeepSpeed's zero_optimization option)
    reduce_bucket_size: int = bounded(50_000_000, ge=1)  # elements per gradient reduction bucket

    def __post_init__(self) -> None:
        if self.stage not in (1, 2, 3):
            raise ValueError(f"parallel.stage={self.stage!r} is not a ZeRO stage; valid: 1, 2, 3")
