"""The transformer assembled from registry components, and the transform pipeline applied to it."""
from plugformer.model.assemble import build_model, model_components, model_dims, model_parts
from plugformer.model.transformer import Block, ModelParts, SelfAttention, Transformer
from plugformer.model.transforms import apply_transforms

__all__ = ["Block", "ModelParts", "SelfAttention", "Transformer", "apply_transforms", "build_model", "model_components", "model_dims",
           "model_parts"]
