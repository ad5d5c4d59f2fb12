"""Adds plugin packages' config directories to Hydra's search path, without importing plugin code.

A plugin package declares its config groups in the ``plugformer.conf`` entry-point group; the value is
read as text (never loaded): ``"my_pkg.conf"`` or ``"pkg://my_pkg.conf"`` or ``"file:///abs/dir"``.
The core registers :class:`PluginConfSearchPath` with Hydra itself (no ``hydra_plugins`` namespace scan).
"""
from __future__ import annotations

from importlib.metadata import entry_points

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.plugins import Plugins
from hydra.plugins.search_path_plugin import SearchPathPlugin

CONF_ENTRY_POINT_GROUP = "plugformer.conf"


def plugin_conf_paths() -> list[tuple[str, str]]:
    """(provider, search-path URL) for every declared plugin config directory."""
    paths = []
    for ep in entry_points(group=CONF_ENTRY_POINT_GROUP):
        url = ep.value if "://" in ep.value else f"pkg://{ep.value.split(':')[0]}"
        paths.append((ep.dist.name if ep.dist else ep.name, url))
    return paths


class PluginConfSearchPath(SearchPathPlugin):
    """Appends each plugin's config directory after plugformer's own ``conf/``."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        for provider, url in plugin_conf_paths():
            search_path.append(provider=f"plugformer-plugin:{provider}", path=url)


def register_search_path_plugin() -> None:
    """Idempotent: make Hydra use :class:`PluginConfSearchPath`."""
    Plugins.instance().register(PluginConfSearchPath)
