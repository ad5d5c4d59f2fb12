"""Typed Hydra configs: schemas, the ConfigStore bridge, the plugin search path, validation."""
from plugformer.config.ranges import Range, bounded
from plugformer.config.schema import (
    COMPONENT_GROUPS, SCHEMA_VERSION, GenerateConfig, ModelConfig, Precision, TrainConfig, TrainerConfig,
)

__all__ = ["COMPONENT_GROUPS", "SCHEMA_VERSION", "GenerateConfig", "ModelConfig", "Precision", "Range",
           "TrainConfig", "TrainerConfig", "bounded"]
