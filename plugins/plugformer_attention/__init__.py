"""Built-in attention backends. Registration only: no torch import here (see ``plugformer_register``).

``naive`` is the readable reference every other backend is tested against; ``sdpa`` is the fast
default, dispatching to PyTorch's fused kernels (flash, memory-efficient, cuDNN or math); ``xformers``
uses xformers' memory-efficient kernels on CUDA (optionally falling back to ``sdpa`` elsewhere).
All three honour the whole ``Attention`` contract, sliding windows and padding biases included, and
compute exact softmax attention (``exact_softmax``: the conformance kit compares them with the reference).
All three take ragged batches (``ragged``, plugin API 1.1: per-row ``q_offset`` and ``kv_lengths``), which
the inference engine's batched decoding needs.
"""
from plugformer import hookimpl

plugformer_api = "1.1"  # the plugformer plugin API this package targets

#: every claim here is exercised by tests/plugins/test_attention.py (and the conformance kit)
_CONTRACT = {
    "causal": True, "bidirectional": True, "kv_cache": True, "attention_bias": True, "padding_mask": True,
    "gqa": True, "sliding_window": True, "exact_softmax": True, "ragged": True,
}


@hookimpl
def plugformer_register(registries):
    registries.attention.register(
        "naive", "plugformer_attention.naive:NaiveAttention",
        schema="plugformer_attention.schemas:NaiveAttentionConfig",
        description="explicit softmax(q kᵀ/√d + bias) v in float32; the reference, O(T²) memory",
        capabilities={"devices": ["cpu", "cuda"], "dtypes": ["float32", "bfloat16", "float16"], **_CONTRACT})
    registries.attention.register(
        "sdpa", "plugformer_attention.sdpa:SdpaAttention",
        schema="plugformer_attention.schemas:SdpaAttentionConfig",
        description="torch.nn.functional.scaled_dot_product_attention (flash / mem-efficient / math)",
        capabilities={"devices": ["cpu", "cuda"], "dtypes": ["float32", "bfloat16", "float16"], **_CONTRACT})
    registries.attention.register(
        "xformers", "plugformer_attention.xformers:XformersAttention",
        schema="plugformer_attention.schemas:XformersAttentionConfig",
        description="xformers.ops.memory_efficient_attention on CUDA; fallback=sdpa runs torch SDPA elsewhere",
        capabilities={"devices": ["cuda"], "dtypes": ["float16", "bfloat16", "float32"], **_CONTRACT},
        available="plugformer_attention.xformers_check:availability")
