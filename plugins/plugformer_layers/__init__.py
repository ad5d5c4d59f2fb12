"""Built-in norms and MLPs. Registration only: no torch import here (see ``plugformer_register``)."""
from plugformer import hookimpl
from plugformer_layers import hf_names

plugformer_api = "1.1"  # the plugformer plugin API this package targets

_NORM = {"devices": ["cpu", "cuda"], "tensor_parallel": "replicate"}
_MLP = {"devices": ["cpu", "cuda"], "tensor_parallel": "colwise_rowwise"}


@hookimpl
def plugformer_register(registries):
    registries.norm.register(
        "layernorm", "plugformer_layers.modules:LayerNorm", schema="plugformer_layers.schemas:LayerNormConfig",
        description="LayerNorm (GPT-2, BERT); bias follows model.bias",
        capabilities={**_NORM, "hf_names": hf_names.LAYERNORM})
    registries.norm.register(
        "rmsnorm", "plugformer_layers.modules:RMSNorm", schema="plugformer_layers.schemas:RMSNormConfig",
        description="RMSNorm (Llama, T5): scale by 1/RMS, weight only",
        capabilities={**_NORM, "hf_names": hf_names.RMSNORM})
    registries.mlp.register(
        "gelu", "plugformer_layers.modules:GeluMLP", schema="plugformer_layers.schemas:GeluMLPConfig",
        description="d → hidden → GELU → d (GPT-2's feed-forward)",
        capabilities={**_MLP, "hf_names": hf_names.GELU})
    registries.mlp.register(
        "relu", "plugformer_layers.modules:ReluMLP", schema="plugformer_layers.schemas:ReluMLPConfig",
        description="d → hidden → ReLU → d (the seed's feed-forward)", capabilities=_MLP)
    registries.mlp.register(
        "swiglu", "plugformer_layers.modules:SwiGLU", schema="plugformer_layers.schemas:SwiGLUConfig",
        description="proj_out(silu(gate x) · up x), Llama's gated MLP; fused gate/up matmul",
        capabilities={**_MLP, "hf_names": hf_names.SWIGLU})
