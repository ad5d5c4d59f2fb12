"""plugformer: a plugin-based toolkit for building, training and serving transformer language models.

The public API for plugin authors is the modules named in :data:`PUBLIC_MODULES`: this one (hookimpl,
errors, registries, the family records) plus :mod:`plugformer.interfaces` (the contracts each component
family honours) and the packages listed there. Everything else is internal and may move without notice.
Importing ``plugformer`` does not import torch.
"""
from __future__ import annotations

from plugformer.errors import (
    ConfigError, DuplicateComponentError, PlugformerError, PluginLoadError, UnavailableError,
    UnknownComponentError, did_you_mean,
)
from plugformer.families import FAMILIES, CoreField, Family
from plugformer.hookspecs import hookimpl
from plugformer.imports import quiet_import
from plugformer.plugins import PLUGIN_API_VERSION, get_registries, load_plugins
from plugformer.registry import Availability, Entry, Registries, Registry
from plugformer.run import RunInfo, TrainingState

__version__ = "0.1.0"
API_VERSION = PLUGIN_API_VERSION[0]  # the plugin API's major version (see plugformer.plugins)

#: The modules plugins (first- and third-party) may import: exact module paths, nothing below them.
#: docs/plugins.md ("Public API") says what each is for; tests/core/test_public_api.py enforces it.
PUBLIC_MODULES: tuple[str, ...] = (
    "plugformer",
    "plugformer.interfaces",
    "plugformer.capabilities",
    "plugformer.checkpoint",
    "plugformer.build",
    "plugformer.model",
    "plugformer.generation",
    "plugformer.engine",
    "plugformer.retrieval",
    "plugformer.config",
    "plugformer.commands",
    "plugformer.ops",
    "plugformer.training",
    "plugformer.testing",
)

__all__ = [
    "API_VERSION", "FAMILIES", "PLUGIN_API_VERSION", "PUBLIC_MODULES", "Availability", "ConfigError", "CoreField",
    "DuplicateComponentError", "Entry", "Family", "PlugformerError", "PluginLoadError", "Registries", "Registry",
    "RunInfo", "TrainingState", "UnavailableError", "UnknownComponentError", "__version__", "did_you_mean",
    "get_registries", "hookimpl", "load_plugins", "quiet_import",
]
