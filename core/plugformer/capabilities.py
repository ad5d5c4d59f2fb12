"""The capability vocabulary components declare at registration (``capabilities={...}``).

Compose-time checks (:mod:`plugformer.config.validate`), ``plugformer plugins --capabilities`` and the
conformance kit all read these keys; an implementation declares only what it really supports, and the
conformance kit tests every claim.

========================  ==========  =============================================================
key                       families    meaning
========================  ==========  =============================================================
``devices``               all         device types it runs on: ``["cpu", "cuda"]``
``dtypes``                attention   floating dtypes it accepts: ``["float32", "bfloat16", "float16"]``
``causal``                attention   honours ``causal=True`` (with ``q_offset``)
``bidirectional``         attention   honours ``causal=False`` (encoders)
``kv_cache``              attention   correct with ``q_offset > 0`` (incremental decoding)
``attention_bias``        attention   adds ``attn_bias`` to the scores (ALiBi, padding)
``padding_mask``          attention   ``-inf`` bias on padded keys gives the unpadded result
``gqa``                   attention   accepts fewer kv heads than query heads
``sliding_window``        attention   has a ``window`` schema field (see ``Attention``)
``ragged``                attention,  handles ragged batches (plugin API 1.1): attention takes a per-row
                          position    ``q_offset`` tensor and ``kv_lengths``; a position encoding reads
                                      ``Positions.rows``. The inference engine refuses components
                                      without it, by name
``exact_softmax``         attention   computes exactly softmax(q kᵀ/√D + bias) v, so the conformance kit
                                      compares it with the reference; variants (cosine, talking-heads,
                                      differential attention) leave it out and are held to the
                                      self-consistency properties only
``needs_attention``       any         attention capabilities it requires, e.g. ``["attention_bias"]``
``injects``               position    where it acts: ``embed``, ``rotate``, ``attention_bias``
``parameters``            position    True when it has trainable parameters
``extrapolates``          position    works beyond ``max_seq_len``
``relative``              position    q·k scores / bias depend only on the distance m - n
``causal`` (objective)    objective   True: decoder (causal attention); False: encoder
``batches``               objective   what it trains on: ``["windows"]`` (default), ``["preference"]`` (pairs),
                                      ``["pairs"]`` (query/positive texts to embed: ``PairBatch``)
``lossless``              tokenizer   decode(encode(text)) == text for any UTF-8 text
``kinds``                 guide       the structured-output spec kinds it compiles: ``["json_schema", "regex", ...]``
``exact``                 retriever   returns the true ``k`` nearest neighbours by inner product (flat
                                      indexes); approximate ones (HNSW, IVF, PQ) leave it out and are held
                                      to the other retriever contracts only
``persistent``            retriever   ``save``/``load`` round-trip (every retriever an index can hold)
``roles``                 embedder    True: queries and passages are embedded differently (``role=``)
``tensor_parallel``       layers      how it shards under tensor parallelism
``multi_adapter``         adapter     True: several saved adapters load side by side on one base and each
                                      batch row runs through its own (``Adapter.load_named``/``route_rows``;
                                      ``plugformer.engine.AdapterSet``)
``hf_names``              position,   its Hugging Face parameter names per architecture (``gpt2``,
                          norm, mlp   ``llama``), read by the ``plugformer_hf`` plugin to import/export;
                                      a component without it is refused by import-hf/export-hf by name
========================  ==========  =============================================================
"""
from __future__ import annotations

ATTENTION_FEATURES = ("causal", "bidirectional", "kv_cache", "attention_bias", "padding_mask", "gqa",
                      "sliding_window", "exact_softmax", "ragged")
