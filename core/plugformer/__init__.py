"""plugformer: a plugin-based toolkit for building, training and serving transformer language models.

The public API for plugin authors is this module plus :mod:`plugformer.interfaces` (the contracts each
component family honours). Importing ``plugformer`` does not import torch.
"""
from __future__ import annotations

from plugformer.errors import (
    ConfigError, DuplicateComponentError, PlugformerError, PluginLoadError, UnavailableError,
    UnknownComponentError,
)
from plugformer.hookspecs import hookimpl
from plugformer.plugins import get_registries, load_plugins
from plugformer.registry import FAMILIES, Entry, Registries, Registry
from plugformer.run import RunInfo

__version__ = "0.1.0"
API_VERSION = 1

__all__ = [
    "API_VERSION", "FAMILIES", "ConfigError", "DuplicateComponentError", "Entry", "PlugformerError",
    "PluginLoadError", "Registries", "Registry", "RunInfo", "UnavailableError", "UnknownComponentError",
    "__version__", "get_registries", "hookimpl", "load_plugins",
]
