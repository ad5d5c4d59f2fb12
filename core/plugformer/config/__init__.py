"""Typed Hydra configs: schemas, the ConfigStore bridge, the plugin search path, validation, and composing a
config outside ``hydra.main`` (:mod:`plugformer.config.compose`, public here)."""
from plugformer.config.compose import (
    compose_checked, parse_overrides, prepare, quote_free_text, rename_keys, split_args, sweep_dirname_excludes,
)
from plugformer.config.ranges import Range, bounded
from plugformer.config.schema import (
    COMPONENT_GROUPS, SCHEMA_VERSION, GenerateConfig, ModelConfig, Precision, TrainConfig, TrainerConfig,
)



def __getattr__(name: str) -> object:
    """``validate_train`` on first use: validation imports torch (device checks); composing does not."""
    if name == "validate_train":
        from plugformer.config.validate import validate_train

        return validate_train
    raise AttributeError(f"module 'plugformer.config' has no attribute '{name}'")


__all__ = ["COMPONENT_GROUPS", "SCHEMA_VERSION", "GenerateConfig", "ModelConfig", "Precision", "Range", "TrainConfig",
           "TrainerConfig", "bounded", "compose_checked", "parse_overrides", "prepare", "quote_free_text",
           "rename_keys", "split_args", "sweep_dirname_excludes", "validate_train"]
