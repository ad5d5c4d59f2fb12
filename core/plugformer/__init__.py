"""plugformer: a plugin-based toolkit for building, training and serving transformer language models.

The public API for plugin authors is this module plus :mod:`plugformer.interfaces` (the contracts each
component family honours). Importing ``plugformer`` does not import torch.
"""
from __future__ import annotations

from plugformer.errors import (
    ConfigError, DuplicateComponentError, PlugformerError, PluginLoadError, UnavailableError,
    UnknownComponentError, did_you_mean,
)
from plugformer.hookspecs import hookimpl
from plugformer.plugins import PLUGIN_API_VERSION, get_registries, load_plugins
from plugformer.registry import FAMILIES, Entry, Registries, Registry
from plugformer.run import RunInfo

__version__ = "0.1.0"
API_VERSION = PLUGIN_API_VERSION[0]  # the plugin API's major version (see plugformer.plugins)

__all__ = [
    "API_VERSION", "FAMILIES", "PLUGIN_API_VERSION", "ConfigError", "DuplicateComponentError", "Entry",
    "PlugformerError", "PluginLoadError", "Registries", "Registry", "RunInfo", "UnavailableError",
    "UnknownComponentError", "__version__", "did_you_mean", "get_registries", "hookimpl", "load_plugins",
]
