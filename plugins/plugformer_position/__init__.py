"""Built-in positional encodings. Registration only: no torch import here (see ``plugformer_register``).

``learned`` and ``sinusoidal`` add a vector per position to the token embeddings (GPT-2, the original
Transformer); ``rope`` rotates queries and keys inside attention (Llama, GPT-NeoX); ``alibi`` biases
the attention scores by distance (BLOOM, MPT); ``none`` adds nothing at all (NoPE). Every one handles
ragged batches (``ragged``, plugin API 1.1: ``Positions.rows``, each row at its own positions).
"""
from plugformer import hookimpl
from plugformer_position import hf_names

plugformer_api = "1.1"  # the plugformer plugin API this package targets


@hookimpl
def plugformer_register(registries):
    registries.position.register(
        "learned", "plugformer_position.learned:LearnedPosition",
        schema="plugformer_position.schemas:LearnedPositionConfig",
        description="trained absolute position embeddings added to the tokens (GPT-2)",
        capabilities={"devices": ["cpu", "cuda"], "injects": ["embed"], "extrapolates": False,
                      "parameters": True, "hf_names": hf_names.LEARNED, "ragged": True})
    registries.position.register(
        "sinusoidal", "plugformer_position.sinusoidal:SinusoidalPosition",
        schema="plugformer_position.schemas:SinusoidalPositionConfig",
        description="fixed sin/cos absolute positions added to the tokens (Attention Is All You Need)",
        capabilities={"devices": ["cpu", "cuda"], "injects": ["embed"], "extrapolates": True,
                      "parameters": False, "ragged": True})
    registries.position.register(
        "rope", "plugformer_position.rope:RotaryPosition",
        schema="plugformer_position.schemas:RopeConfig",
        description="rotary position embedding on q and k, rotate-half convention; partial, linear/ntk scaling",
        capabilities={"devices": ["cpu", "cuda"], "injects": ["rotate"], "extrapolates": True,
                      "parameters": False, "relative": True, "hf_names": hf_names.ROPE, "ragged": True})
    registries.position.register(
        "alibi", "plugformer_position.alibi:AlibiPosition",
        schema="plugformer_position.schemas:AlibiConfig",
        description="per-head linear distance penalty on the attention scores (ALiBi, BLOOM, MPT)",
        capabilities={"devices": ["cpu", "cuda"], "injects": ["attention_bias"], "extrapolates": True,
                      "parameters": False, "relative": True, "needs_attention": ["attention_bias"],
                      "ragged": True})
    registries.position.register(
        "none", "plugformer_position.none:NoPosition",
        description="no positional encoding (NoPE): causal masking alone carries order",
        capabilities={"devices": ["cpu", "cuda"], "injects": [], "extrapolates": True, "parameters": False,
                      "ragged": True})
