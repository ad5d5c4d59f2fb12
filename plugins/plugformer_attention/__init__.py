"""Built-in attention backends. Registration only: no torch import here (see ``plugformer_register``).

``naive`` is the readable reference every other backend is tested against; ``sdpa`` is the fast
default, dispatching to PyTorch's fused kernels (flash, memory-efficient, cuDNN or math).
"""
from plugformer import hookimpl

_COMMON = {
    "causal": True, "bidirectional": True, "kv_cache": True, "attention_bias": True, "gqa": True,
    "dtypes": ["float32", "bfloat16", "float16"],
}


@hookimpl
def plugformer_register(registries):
    registries.attention.register(
        "naive", "plugformer_attention.naive:NaiveAttention",
        schema="plugformer_attention.schemas:NaiveAttentionConfig",
        description="explicit softmax(q kᵀ/√d + bias) v in float32; the reference, O(T²) memory",
        capabilities={"devices": ["cpu", "cuda"], **_COMMON})
    registries.attention.register(
        "sdpa", "plugformer_attention.sdpa:SdpaAttention",
        schema="plugformer_attention.schemas:SdpaAttentionConfig",
        description="torch.nn.functional.scaled_dot_product_attention (flash / mem-efficient / math)",
        capabilities={"devices": ["cpu", "cuda"], **_COMMON})
