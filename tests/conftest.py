"""Shared fixtures: a plugin host isolated from whatever else is installed, fake plugins behind fake
entry points, throwaway modules on disk, and a tiny composed train config."""
from __future__ import annotations

import sys
import textwrap
import types
from collections.abc import Callable, Iterator
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

import pytest

from plugformer.plugins import ENTRY_POINT_GROUP, LoadSettings, PluginHost, load_plugins, reset_plugins
from plugformer.registry import Registries

PLUGIN_ENV = ("PLUGFORMER_PLUGINS", "PLUGFORMER_BLOCK_PLUGINS", "PLUGFORMER_DISABLE_PLUGIN_AUTOLOAD",
              "PLUGFORMER_STRICT_PLUGINS")

#: the smallest model every test builds unless it needs something else
TINY = ("model.n_layers=2", "model.d_model=32", "model.n_heads=4", "data.seq_len=16")


def pytest_configure(config: pytest.Config) -> None:
    # plugformer.config.store silences this at import, but pytest resets warning filters per test
    config.addinivalue_line("filterwarnings", "ignore:(?s).*is validated against ConfigStore schema:UserWarning")


def first_party_entry_points() -> list[EntryPoint]:
    """The ``plugformer`` entry points that the plugformer distribution itself declares."""
    return [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.dist is not None and ep.dist.name == "plugformer"]


def _component_nodes() -> set[tuple[str, ...]]:
    """(group..., option) of every config node stored in the component groups and their schemas."""
    from hydra.core.config_store import ConfigStore

    from plugformer.config.schema import COMPONENT_GROUPS
    from plugformer.config.store import SCHEMA_GROUP

    repo, found = ConfigStore.instance().repo, set()
    for path in [(g,) for g in COMPONENT_GROUPS] + [(SCHEMA_GROUP, g) for g in COMPONENT_GROUPS]:
        node = repo
        for part in path:
            node = node.get(part, {})
        found.update((*path, name) for name in node)
    return found


def _forget_nodes(nodes: set[tuple[str, ...]]) -> None:
    from hydra.core.config_store import ConfigStore

    for *path, name in nodes:
        node = ConfigStore.instance().repo
        for part in path:
            node = node[part]
        del node[name]


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """The models here are tiny: extra intra-op threads only add synchronisation (10-100x slower on a
    busy machine)."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture
def clean_plugin_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No plugin switches inherited from the shell running the tests."""
    for key in PLUGIN_ENV:
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def no_global_host() -> Iterator[None]:
    """The process-wide host is forgotten before and after the test."""
    reset_plugins()
    yield
    reset_plugins()


@pytest.fixture
def host(no_global_host: None) -> Iterator[PluginHost]:
    """This process's host, holding only plugformer's own plugins. Component configs that a test stores
    in Hydra's ConfigStore (fake plugins' schemas) are removed after it."""
    before = _component_nodes()
    yield load_plugins(eps=first_party_entry_points(), settings=LoadSettings())
    _forget_nodes(_component_nodes() - before)


@pytest.fixture
def registries(host: PluginHost) -> Registries:
    return host.registries


@pytest.fixture(scope="session")
def builtin_host() -> PluginHost:
    """A host with the first-party plugins that never becomes the process-wide one (read-only use)."""
    h = PluginHost()
    h.load_entry_points(first_party_entry_points(), LoadSettings())
    return h


def fake_entry_point(name: str, value: str, dist: str | None = "fake-dist", version: str = "1.0") -> EntryPoint:
    """An entry point of group ``plugformer`` as a distribution named ``dist`` would declare it."""
    ep = EntryPoint(name, value, ENTRY_POINT_GROUP)
    return ep._for(types.SimpleNamespace(name=dist, version=version)) if dist is not None else ep


@pytest.fixture
def make_ep() -> Callable[..., EntryPoint]:
    """``make_ep(name, value, dist="fake-dist", version="1.0")``."""
    return fake_entry_point


@pytest.fixture
def fake_plugin(monkeypatch: pytest.MonkeyPatch) -> Callable[..., EntryPoint]:
    """``fake_plugin(module_name, ep_name=None, dist=..., **attrs)``: a plugin module in ``sys.modules``
    (removed after the test) holding ``attrs``, and an entry point that loads it."""

    def make(module_name: str, ep_name: str | None = None, dist: str = "fake-dist", version: str = "1.0",
             **attrs: Any) -> EntryPoint:
        module = types.ModuleType(module_name)
        for key, value in attrs.items():
            setattr(module, key, value)
        monkeypatch.setitem(sys.modules, module_name, module)
        return fake_entry_point(ep_name or module_name, module_name, dist, version)

    return make


@pytest.fixture
def module_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, str], str]]:
    """``module_file(name, source)``: an importable module on disk, forgotten after the test."""
    names: list[str] = []
    monkeypatch.syspath_prepend(str(tmp_path))

    def make(name: str, source: str) -> str:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        names.append(name)
        return name

    yield make
    for name in names:
        sys.modules.pop(name, None)


def compose_train(host: PluginHost, *overrides: str) -> Any:
    """A composed ``train`` config for ``host``'s registries (stores their schemas first)."""
    from plugformer.config import compose_checked
    from plugformer.config.searchpath import register_search_path_plugin
    from plugformer.config.store import store_component_configs

    store_component_configs(host.registries)
    register_search_path_plugin()
    return compose_checked("train", list(overrides), host)


@pytest.fixture(scope="session")
def tiny_config(builtin_host: PluginHost) -> Callable[..., Any]:
    """``tiny_config(*overrides)``: the TINY train config plus ``overrides`` (cached; copy before editing)."""
    cache: dict[tuple[str, ...], Any] = {}

    def get(*overrides: str) -> Any:
        key = (*TINY, *overrides)
        if key not in cache:
            cache[key] = compose_train(builtin_host, *key)
        return cache[key]

    return get
