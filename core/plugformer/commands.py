"""How a command joins the ``plugformer`` CLI, and the one way commands read their arguments.

The core's commands (``train``, ``eval``, ...) and a plugin's (``plugformer_hf``'s ``import-hf``, a server
plugin's ``serve``) live in one :class:`Commands` table. A plugin adds its own through the
``plugformer_register_commands(commands)`` hook::

    @hookimpl
    def plugformer_register_commands(commands):
        commands.register("hello", "my_pkg.cli:hello", "say hello: name=WHO")

The target is a lazy ``"module:function"`` string: ``plugformer --help`` lists every command without
importing its module (nor torch). The function takes the argument list and returns the exit status; a
:class:`~plugformer.errors.PlugformerError` it raises is printed as one line (exit 2).

Every command that does not compose a Hydra config reads ``key=value`` arguments with
:func:`parse_keyvalues`, so misspelled, repeated or missing keys read the same everywhere.
"""
from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from plugformer.errors import PlugformerError, PluginLoadError, did_you_mean

#: the provider named for the core's own commands
CORE_PROVIDER = "plugformer"

CommandFunction = Callable[[list[str]], int]


@dataclass(frozen=True)
class Command:
    """One CLI command: its name, lazy ``"module:function"`` target, one-line help and who provides it."""

    name: str
    target: str
    help: str
    provider: str = CORE_PROVIDER
    version: str = ""
    plugin: str = ""  # the entry-point name of the plugin that registered it ("" for the core)

    @property
    def is_core(self) -> bool:
        return not self.plugin

    def load(self) -> CommandFunction:
        """Import the target and return the function (the only place a command's module is imported)."""
        module, _, attr = self.target.partition(":")
        try:
            function = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise PlugformerError(f"command '{self.name}' from {self.provider} cannot be loaded ({self.target}: "
                                  f"{type(exc).__name__}: {exc})") from None
        if not callable(function):
            raise PlugformerError(f"command '{self.name}' from {self.provider}: {self.target} is not callable")
        return function


class Commands:
    """The command table: name → :class:`Command`. A name is taken once: the core's names can never be
    taken by a plugin, and a second plugin registering a taken name is refused, naming both packages."""

    def __init__(self) -> None:
        self._commands: dict[str, Command] = {}
        self._provider: tuple[str, str, str] = (CORE_PROVIDER, "", "")

    def register(self, name: str, target: str, help: str) -> Command:
        """Add the command ``name`` running ``target`` (``"module:function"``), described by ``help``."""
        provider, version, plugin = self._provider
        if not name or name.startswith("-") or any(c.isspace() for c in name):
            raise PluginLoadError(f"command name {name!r} (from {provider}) must be a non-empty word not "
                                  "starting with '-'")
        if not isinstance(target, str) or ":" not in target:
            raise PluginLoadError(f"command '{name}' (from {provider}): target must be a lazy 'module:function' "
                                  f"string, got {target!r}")
        command = Command(name, target, " ".join(str(help).split()), provider, version, plugin)
        old = self._commands.get(name)
        if old is not None:
            if old == command:
                return old
            raise PluginLoadError(f"command '{name}' is registered twice: by {_who(old)} ({old.target}) and by "
                                  f"{_who(command)} ({target}); the first one is kept")
        self._commands[name] = command
        return command

    def get(self, name: str) -> Command:
        """The command ``name``, or a one-line error with a did-you-mean and every command."""
        try:
            return self._commands[name]
        except KeyError:
            raise PlugformerError(f"unknown command '{name}'{did_you_mean(name, self.names())}; "
                                  f"commands: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        """Command names in registration order (the core's first)."""
        return list(self._commands)

    def __contains__(self, name: object) -> bool:
        return name in self._commands

    def __iter__(self) -> Iterator[Command]:
        return iter(list(self._commands.values()))

    def __len__(self) -> int:
        return len(self._commands)

    @contextlib.contextmanager
    def providing(self, provider: str, version: str, plugin: str) -> Iterator[None]:
        """Attribute every ``register`` inside the block to the plugin ``plugin`` of distribution ``provider``."""
        saved = self._provider
        self._provider = (provider, version, plugin)
        try:
            yield
        finally:
            self._provider = saved

    def remove_plugin(self, plugin: str) -> None:
        """Drop every command ``plugin`` registered (its registration failed halfway)."""
        for name in [n for n, c in self._commands.items() if plugin and c.plugin == plugin]:
            del self._commands[name]


def _who(command: Command) -> str:
    return f"{command.provider} {command.version}".strip() if command.plugin else f"the core ({CORE_PROVIDER})"


def parse_keyvalues(command: str, args: Sequence[str], keys: Sequence[str], required: Sequence[str] = (),
                    positional: str | None = None, flags: Sequence[str] = ()) -> dict[str, str]:
    """``{key: value}`` from ``args``; unknown, repeated or empty keys and missing required ones are errors.

    ``positional`` names the key a single bare argument (no ``=``) stands for, e.g. the directory of
    ``plugformer import-hf DIR``. ``flags`` are switches written ``--NAME`` (value ``"true"``). A key may
    also be written as a long option, ``--KEY VALUE`` or ``--KEY=VALUE`` (``plugformer report DIR --out X``).
    """
    values: dict[str, str] = {}
    options = [*keys, *(f"--{f}" for f in flags)]
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if arg.startswith("--") and len(arg) > 2:
            name, eq, value = arg[2:].partition("=")
            if name in flags and not eq:
                key, value = name, "true"
            elif name in keys:
                if not eq:
                    if not rest:
                        raise PlugformerError(f"plugformer {command}: --{name} needs a value")
                    value = rest.pop(0)
                key = name
            else:
                raise PlugformerError(f"plugformer {command} has no option '{arg.partition('=')[0]}'"
                                      f"{did_you_mean(arg.partition('=')[0], options)}; options: {', '.join(options)}")
        else:
            key, eq, value = arg.partition("=")
            if not eq and positional is not None and positional not in values:
                key, value = positional, arg
            elif not eq:
                raise PlugformerError(f"plugformer {command} takes key=value arguments, got '{arg}'; keys: "
                                      f"{', '.join(keys)}")
            if key not in keys:
                raise PlugformerError(f"plugformer {command} has no option '{key}'{did_you_mean(key, keys)}; "
                                      f"keys: {', '.join(keys)}")
        if key in values:
            raise PlugformerError(f"plugformer {command}: '{key}' given twice")
        if not value:
            raise PlugformerError(f"plugformer {command}: '{key}=' needs a value")
        values[key] = value
    for key in required:
        if key not in values:
            how = f"{key.upper()} (or {key}=...)" if key == positional else f"{key}=..."
            raise PlugformerError(f"plugformer {command} needs {how}; keys: {', '.join(keys)}")
    return values


def component_nodes(command: str, args: Sequence[str], families: Sequence[str],
                    defaults: dict[str, str | None] | None = None) -> tuple[list[str], dict[str, dict | None]]:
    """Split ``args`` into the component choices of ``families`` and the rest (for :func:`parse_keyvalues`).

    ``FAMILY=NAME`` picks an implementation and ``FAMILY.KEY=VALUE`` sets one of its options (the value read as
    YAML: ``16`` is an int, ``[a, b]`` a list), as in a Hydra config: ``retriever=faiss retriever.index=hnsw``.
    Returns ``(rest, {family: node or None})``; a family's node is ``{"name": ..., **options}`` with the name
    from ``defaults`` when only options are given, ``None`` when neither (nor a default) is; ``FAMILY=none``
    is None too. A repeated key or a malformed value is one line."""
    import yaml

    rest: list[str] = []
    names: dict[str, str | None] = dict(defaults or {})
    options: dict[str, dict] = {f: {} for f in families}
    seen: set[str] = set()
    for arg in args:
        key, eq, value = arg.partition("=")
        family, dot, option = key.partition(".")
        if not eq or family not in families or (dot and not option):
            rest.append(arg)
            continue
        if key in seen:
            raise PlugformerError(f"plugformer {command}: '{key}' given twice")
        seen.add(key)
        if not dot:
            names[family] = None if value in ("none", "null", "") else value
            continue
        try:
            options[family][option] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError as exc:
            problem = str(exc).splitlines()[0]
            raise PlugformerError(f"plugformer {command}: {key}={value!r} is not a valid value ({problem})") from None
    nodes: dict[str, dict | None] = {}
    for family in families:
        name = names.get(family)
        if name is None:
            if options[family]:
                raise PlugformerError(f"plugformer {command}: {family}.{next(iter(options[family]))} is set but no "
                                      f"{family} is chosen; add {family}=NAME")
            nodes[family] = None
        else:
            nodes[family] = {"name": name, **options[family]}
    return rest, nodes


def positive_int(command: str, values: dict[str, str], key: str) -> int | None:
    """``values[key]`` (from :func:`parse_keyvalues`) as a whole number >= 1, None when absent; anything else is
    a one-line error naming the command and the key."""
    if key not in values:
        return None
    try:
        number = int(values[key])
    except ValueError:
        raise PlugformerError(f"plugformer {command}: {key}={values[key]!r} is not a whole number") from None
    if number < 1:
        raise PlugformerError(f"plugformer {command}: {key} must be >= 1, got {number}")
    return number


__all__ = ["CORE_PROVIDER", "Command", "CommandFunction", "Commands", "component_nodes", "parse_keyvalues",
           "positive_int"]
