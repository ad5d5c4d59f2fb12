"""The transformer assembled from registry components, the transform pipeline applied to it, and the
precision context its forward passes run under (:func:`autocast`)."""
from plugformer.model.assemble import build_model, model_components, model_dims, model_parts
from plugformer.model.transformer import Block, ModelParts, SelfAttention, Transformer
from plugformer.model.transforms import apply_transforms
from plugformer.precision import autocast

__all__ = ["Block", "ModelParts", "SelfAttention", "Transformer", "apply_transforms", "autocast", "build_model",
           "model_components", "model_dims", "model_parts"]
