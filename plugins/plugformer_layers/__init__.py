"""Built-in norms and MLPs. Registration only: no torch import here (see ``plugformer_register``)."""
from plugformer import hookimpl


@hookimpl
def plugformer_register(registries):
    registries.norm.register(
        "layernorm", "plugformer_layers.modules:LayerNorm", schema="plugformer_layers.schemas:LayerNormConfig",
        description="LayerNorm (GPT-2, BERT); bias follows model.bias",
        capabilities={"devices": ["cpu", "cuda"], "tensor_parallel": "replicate"})
    registries.mlp.register(
        "gelu", "plugformer_layers.modules:GeluMLP", schema="plugformer_layers.schemas:GeluMLPConfig",
        description="d → hidden → GELU → d (GPT-2's feed-forward)",
        capabilities={"devices": ["cpu", "cuda"], "tensor_parallel": "colwise_rowwise"})
