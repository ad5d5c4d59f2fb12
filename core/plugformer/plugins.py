"""Finds plugins through the ``plugformer`` entry-point group and lets them register components.

Loading is explicit (:func:`load_plugins`), idempotent, and isolates each entry point: a plugin that
fails to import or to register is recorded (``plugformer plugins`` shows it, unknown-name errors list
it) and the others keep working. Switches, read from the environment so that every torchrun rank and
launcher worker sees the same ones:

- ``PLUGFORMER_DISABLE_PLUGIN_AUTOLOAD=1``: load only the plugins named in ``PLUGFORMER_PLUGINS``;
- ``PLUGFORMER_PLUGINS=a,b``: allow list (entry-point or distribution names);
- ``PLUGFORMER_BLOCK_PLUGINS=c,d``: block list;
- ``PLUGFORMER_STRICT_PLUGINS=1``: any load failure is an error.

Plugin API version: the interfaces, hooks and registry calls a plugin may use carry
:data:`PLUGIN_API_VERSION` (major, minor). A plugin module declares the version it targets as
``plugformer_api = "MAJOR.MINOR"``; one built for another major, or for a newer minor than this core
provides, is refused at load (recorded as failed, naming the package, its target and the core's version).
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy

from plugformer import hookspecs
from plugformer.errors import PluginLoadError
from plugformer.registry import Registries

ENTRY_POINT_GROUP = "plugformer"
ENV_DISABLE_AUTOLOAD = "PLUGFORMER_DISABLE_PLUGIN_AUTOLOAD"
ENV_ALLOW = "PLUGFORMER_PLUGINS"
ENV_BLOCK = "PLUGFORMER_BLOCK_PLUGINS"
ENV_STRICT = "PLUGFORMER_STRICT_PLUGINS"
#: the distribution whose plugins are first-party: they load before any other, so a third-party plugin
#: can never take a built-in name by loading first (it must ask with ``override=True``)
FIRST_PARTY_DIST = "plugformer"

#: (major, minor) of the plugin API this core provides: a major bump breaks plugins, a minor one adds to it
#: 1.1 added ragged batches (``Positions.rows``, per-row ``q_offset`` and ``kv_lengths`` for attention,
#: capability ``ragged``) for the inference engine; plugins targeting 1.0 keep working
PLUGIN_API_VERSION: tuple[int, int] = (1, 1)
#: the plugin-module attribute declaring the API version a plugin targets, e.g. ``plugformer_api = "1.0"``
API_ATTRIBUTE = "plugformer_api"


def parse_api_version(value: object) -> tuple[int, int]:
    """``"1"``, ``"1.0"``, ``1`` or ``(1, 0)`` → ``(1, 0)``; anything else is a :class:`PluginLoadError`."""
    parts = value if isinstance(value, tuple) else str(value).strip().split(".")
    try:
        numbers = [int(p) for p in parts]
    except (TypeError, ValueError):
        numbers = []
    if not 1 <= len(numbers) <= 2 or min(numbers) < 0:
        raise PluginLoadError(f"{API_ATTRIBUTE} = {value!r} is not a plugin API version (write it as "
                              f"\"MAJOR.MINOR\", e.g. \"{PLUGIN_API_VERSION[0]}.{PLUGIN_API_VERSION[1]}\")")
    return numbers[0], numbers[1] if len(numbers) == 2 else 0


def api_text(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def check_api_version(plugin: object, name: str, dist: str, version: str) -> str:
    """The API version ``plugin`` declares (``""`` when it declares none, which is accepted as the
    current one); a :class:`PluginLoadError` naming the package, its target and the core's version when
    the core cannot honour it (another major, or a newer minor)."""
    declared = getattr(plugin, API_ATTRIBUTE, None)
    if declared is None:
        return ""
    target = parse_api_version(declared)
    core = PLUGIN_API_VERSION
    if target[0] != core[0] or target[1] > core[1]:
        from plugformer import __version__

        raise PluginLoadError(
            f"incompatible plugin API: plugin '{name}' from {f'{dist} {version}'.strip()} targets plugformer plugin "
            f"API {api_text(target)}, but plugformer {__version__} provides plugin API {api_text(core)} "
            f"(install a release of {dist} built for API {core[0]}.x)")
    return api_text(target)


def one_line(exc: BaseException) -> str:
    """``Type: message`` with all whitespace runs collapsed, so it can be quoted inside one-line errors."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def first_party_first(eps: Iterable[EntryPoint]) -> list[EntryPoint]:
    """``eps`` with plugformer's own entry points first (each group keeps its order): whatever order the
    environment lists distributions in, a name collision always finds the built-in registered and fails
    the newcomer, naming both packages."""
    eps = list(eps)
    first = [ep.dist is not None and ep.dist.name == FIRST_PARTY_DIST for ep in eps]
    return [ep for ep, mine in zip(eps, first) if mine] + [ep for ep, mine in zip(eps, first) if not mine]


def _names(value: str | None) -> frozenset[str]:
    return frozenset(n.strip() for n in (value or "").split(",") if n.strip())


@dataclass(frozen=True)
class LoadSettings:
    """Which entry points to load and how strictly."""

    autoload: bool = True
    allow: frozenset[str] = frozenset()
    block: frozenset[str] = frozenset()
    strict: bool = False

    @classmethod
    def from_env(cls) -> LoadSettings:
        flag = lambda key: os.environ.get(key, "").lower() in {"1", "true", "yes"}  # noqa: E731
        return cls(not flag(ENV_DISABLE_AUTOLOAD), _names(os.environ.get(ENV_ALLOW)),
                   _names(os.environ.get(ENV_BLOCK)), flag(ENV_STRICT))

    def wants(self, *names: str) -> tuple[bool, str]:
        """(load it?, why not) for a plugin known by any of ``names``."""
        if self.block.intersection(names):
            return False, "blocked"
        if self.allow and not self.allow.intersection(names):
            return False, "not in allow list"
        if not self.autoload and not self.allow.intersection(names):
            return False, "autoload disabled"
        return True, ""


@dataclass
class PluginRecord:
    """What happened to one plugin: ``loaded``, ``failed`` or ``skipped`` (with the reason)."""

    name: str
    dist: str
    version: str
    value: str
    status: str
    error: str = ""
    api: str = ""  # the plugin API version it declares ("" = undeclared)


class PluginHost:
    """This process's pluggy manager, registries, and the record of what loaded."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.registries = Registries()
        self.commands = _core_commands()
        self.records: list[PluginRecord] = []

    @property
    def hook(self) -> Any:
        return self.pm.hook

    def add_plugin(self, plugin: object, name: str, dist: str = "<local>", version: str = "",
                   value: str = "") -> PluginRecord:
        """Register ``plugin`` with pluggy and run its ``plugformer_register``; failures are recorded."""
        record = PluginRecord(name, dist, version, value or getattr(plugin, "__name__", repr(plugin)), "loaded")
        before = self.registries.snapshot()
        try:
            record.api = check_api_version(plugin, name, dist, version)
            self.pm.register(plugin, name=name)
            self.check_hooks(plugin)
            with self.registries.providing(dist, version, name):
                for impl in self.pm.hook.plugformer_register.get_hookimpls():
                    if impl.plugin is plugin:
                        impl.function(*[{"registries": self.registries}[a] for a in impl.argnames])
            with self.commands.providing(dist, version, name):
                for impl in self.pm.hook.plugformer_register_commands.get_hookimpls():
                    if impl.plugin is plugin:
                        impl.function(*[{"commands": self.commands}[a] for a in impl.argnames])
        except Exception as exc:
            self.registries.restore(before)  # what it added goes, and what it replaced comes back
            self.commands.remove_plugin(name)
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            record.status, record.error = "failed", one_line(exc)
            self.registries.failures[name] = record.error
        self.records.append(record)
        return record

    def check_hooks(self, plugin: object) -> None:
        """Refuse hook implementations whose name matches no hookspec (a typo would never be called)."""
        for caller in self.pm.get_hookcallers(plugin) or []:
            if caller.spec is None:
                raise PluginLoadError(f"unknown hook '{caller.name}' (hooks are: "
                                      f"{', '.join(sorted(n for n in dir(hookspecs) if n.startswith('plugformer_')))})")

    def load_entry_points(self, eps: Iterable[EntryPoint], settings: LoadSettings) -> None:
        seen: dict[str, str] = {}
        for ep in first_party_first(eps):
            dist = ep.dist.name if ep.dist is not None else "<unknown>"
            version = ep.dist.version if ep.dist is not None else ""
            if ep.name in seen:
                error = f"duplicate entry point name '{ep.name}' (also provided by {seen[ep.name]})"
                self.records.append(PluginRecord(ep.name, dist, version, ep.value, "failed", error))
                self.registries.failures[f"{ep.name} from {dist}"] = error
                continue
            seen[ep.name] = dist
            wanted, why = settings.wants(ep.name, dist)
            if not wanted:
                self.records.append(PluginRecord(ep.name, dist, version, ep.value, "skipped", why))
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                error = one_line(exc)
                self.records.append(PluginRecord(ep.name, dist, version, ep.value, "failed", error))
                self.registries.failures[ep.name] = error
                continue
            self.add_plugin(plugin, ep.name, dist, version, ep.value)
        if settings.strict and (failed := [r for r in self.records if r.status == "failed"]):
            raise PluginLoadError("strict plugin loading: " + "; ".join(f"{r.name} ({r.error})" for r in failed))

    def manifest(self) -> list[dict[str, Any]]:
        """Each plugin, its version and the components it registered, as saved with every run and checkpoint."""
        return [{**asdict(r), "components": self.registries.components_of(r.name)} for r in self.records]


def _core_commands() -> Any:
    """A command table holding the core's commands (see :mod:`plugformer.commands`)."""
    from plugformer.cli.table import register_core_commands
    from plugformer.commands import Commands

    commands = Commands()
    register_core_commands(commands)
    return commands


_host: PluginHost | None = None


def load_plugins(eps: Iterable[EntryPoint] | None = None, settings: LoadSettings | None = None) -> PluginHost:
    """Load plugins once per process and return the host; later calls return the same host.

    Tests pass ``eps`` (fake entry points) and ``settings`` to build a fresh host.
    """
    global _host
    if _host is not None and eps is None and settings is None:
        return _host
    host = PluginHost()
    host.load_entry_points(entry_points(group=ENTRY_POINT_GROUP) if eps is None else eps,
                           settings or LoadSettings.from_env())
    _host = host
    return host


def reset_plugins() -> None:
    """Forget the loaded host (tests)."""
    global _host
    _host = None


def get_registries() -> Registries:
    """The registries of this process, loading plugins first if needed."""
    return load_plugins().registries
