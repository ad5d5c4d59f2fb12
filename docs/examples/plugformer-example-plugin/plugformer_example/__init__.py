"""plugformer-example-plugin: registration only (no torch import here, so `plugformer plugins` stays fast).

- attention ``chunked``: exact attention computed over key blocks with an online softmax (the
  FlashAttention recurrence, in plain PyTorch): peak memory grows with ``chunk_size`` instead of the
  sequence length; optional Gemma-2-style logit soft-capping (``softcap``); takes ragged batches;
- position ``t5_bias``: T5's learned per-head bias over log-spaced relative-distance buckets (ragged too);
- callback ``csv_log``: every logged and evaluated step as a row of ``<run dir>/metrics.csv``.
"""
from plugformer import hookimpl

#: the plugformer plugin API this package is written against (MAJOR.MINOR); a core with another major
#: version refuses to load it instead of failing somewhere inside a training run
plugformer_api = "1.1"

_SCHEMAS = "plugformer_example.schemas"


@hookimpl
def plugformer_register(registries):
    registries.attention.register(
        "chunked", "plugformer_example.attention:ChunkedAttention", schema=f"{_SCHEMAS}:ChunkedAttentionConfig",
        description="exact attention over key chunks with an online softmax (memory ∝ chunk_size); optional "
                    "logit soft-capping",
        capabilities={"devices": ["cpu", "cuda"], "dtypes": ["float32", "bfloat16"], "causal": True,
                      "bidirectional": True, "kv_cache": True, "attention_bias": True, "padding_mask": True,
                      "gqa": True, "exact_softmax": True,  # exact with the default softcap=None
                      "ragged": True})  # API 1.1: per-row q_offset and kv_lengths (batched decoding)
    registries.position.register(
        "t5_bias", "plugformer_example.position:T5RelativeBias", schema=f"{_SCHEMAS}:T5BiasConfig",
        description="T5 relative position bias: a learned per-head scalar per log-spaced distance bucket",
        capabilities={"devices": ["cpu", "cuda"], "injects": ["attention_bias"], "parameters": True,
                      "relative": True, "extrapolates": True, "needs_attention": ["attention_bias"],
                      "ragged": True})  # API 1.1: reads Positions.rows
    registries.callback.register(
        "csv_log", "plugformer_example.callbacks:CSVLogger",
        description="writes each logged/evaluated step as a row of <run dir>/metrics.csv (rank 0 only)")
