"""The registries an operation builds components from: the caller's, or the loaded plugins'."""
from __future__ import annotations

from plugformer.registry import Registries


def registries_or_loaded(registries: Registries | None) -> Registries:
    """``registries`` itself, or those of :func:`plugformer.load_plugins` (the installed plugins)."""
    if registries is not None:
        return registries
    from plugformer.plugins import load_plugins

    return load_plugins().registries
