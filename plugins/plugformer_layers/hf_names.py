"""How these norms' and MLPs' parameters are named in Hugging Face models (the ``hf_names`` capability,
read by plugformer_hf's ``import-hf``/``export-hf``; plain data, no torch).

``{HF model_type: {our parameter (relative to the norm or MLP module): HF name}}``, the HF name relative
to the HF norm or MLP module. A value is a name (same layout), ``(name, "transposed")`` (GPT-2's Conv1D
stores ``in × out``) or ``((name_a, name_b), "interleaved")`` (one fused tensor whose rows alternate a j,
b j, as swiglu's ``proj_in`` fuses Llama's gate and up projections). A bias missing from the model is
skipped (or, where the HF model always has one, exported as zeros).
"""
LAYERNORM = {"gpt2": {"weight": "weight", "bias": "bias"}}
RMSNORM = {"llama": {"weight": "weight"}}
GELU = {"gpt2": {"proj_in.weight": ("c_fc.weight", "transposed"), "proj_in.bias": "c_fc.bias",
                 "proj_out.weight": ("c_proj.weight", "transposed"), "proj_out.bias": "c_proj.bias"}}
SWIGLU = {"llama": {"proj_in.weight": (("gate_proj.weight", "up_proj.weight"), "interleaved"),
                    "proj_in.bias": (("gate_proj.bias", "up_proj.bias"), "interleaved"),
                    "proj_out.weight": "down_proj.weight", "proj_out.bias": "down_proj.bias"}}
