"""How these position encodings' parameters are named in Hugging Face models (the ``hf_names``
capability, read by plugformer_hf's ``import-hf``/``export-hf``; plain data, no torch).

``{HF model_type: {our parameter (relative to the model's position module): HF name (relative to the
base model, e.g. GPT-2's transformer.)}}``; an encoding with no parameters maps to ``{}``. An encoding
without a declaration has no Hugging Face equivalent and is refused by name.
"""
#: GPT-2's learned absolute positions: one (max_seq_len, d_model) table
LEARNED = {"gpt2": {"wpe.weight": "wpe.weight"}}
#: Llama's rotary encoding (rotate-half, as plugformer's rope): no parameters
ROPE: dict[str, dict[str, str]] = {"llama": {}}
