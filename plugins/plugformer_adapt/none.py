"""The ``none`` adapter: the config's way of saying "train every parameter"."""
from __future__ import annotations

from pathlib import Path

from plugformer import ConfigError
from plugformer.interfaces import Adapter
from torch import nn


class NoAdapter(Adapter):
    """Leaves the model untouched (the trainer skips it: nothing to apply, save or merge)."""

    def apply(self, model: nn.Module) -> nn.Module:
        return model

    @classmethod
    def load_adapter(cls, model: nn.Module, directory: Path) -> nn.Module:
        raise ConfigError(f"adapter 'none' has no saved form to load from '{directory}'")

    @staticmethod
    def merge(model: nn.Module) -> nn.Module:
        return model
