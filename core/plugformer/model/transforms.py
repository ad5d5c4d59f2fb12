"""The ordered model-transform pipeline: adapters/quantizers → tensor parallel → activation
checkpointing → compile → data-parallel wrapper (see :class:`plugformer.interfaces.Stage`)."""
from __future__ import annotations

from torch import nn

from plugformer.interfaces import ModelTransform


def apply_transforms(model: nn.Module, transforms: list[ModelTransform]) -> nn.Module:
    """Apply ``transforms`` sorted by stage (stable: equal stages keep their given order)."""
    for transform in sorted(transforms, key=lambda t: int(t.stage)):
        model = transform.apply(model)
    return model
