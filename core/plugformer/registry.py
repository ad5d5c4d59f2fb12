"""Typed, lazy registries: one per component family.

A registry maps a short name (``sdpa``) to an :class:`Entry`: a lazy ``"module:attr"`` reference (or the
object itself), the distribution that provided it, an optional config schema (a dataclass), declared
capabilities and an availability check. Nothing here imports torch: listing plugins stays fast.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from plugformer.errors import DuplicateComponentError, UnknownComponentError, component_origin, unknown_components
from plugformer.families import FAMILIES

Availability = tuple[bool, str]
LOCAL_PROVIDER = ("<local>", "")


def resolve(ref: Any) -> Any:
    """Import ``"package.module:attr"`` (dots allowed in attr); return any other object unchanged."""
    if not isinstance(ref, str):
        return ref
    module_name, _, attr = ref.partition(":")
    obj = importlib.import_module(module_name)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


@dataclass
class Entry:
    """One registered implementation. ``target`` and ``schema`` stay unimported until used."""

    name: str
    family: str
    target: Any
    provider: str
    version: str
    plugin: str = ""
    schema: Any = None
    description: str = ""
    capabilities: dict[str, Any] = field(default_factory=dict)
    available: Callable[[], Availability] | str | None = None
    interface: str | None = None
    overrides: bool = False

    def load(self) -> Any:
        """Import and return the implementation, checking it honours the family's interface."""
        obj = resolve(self.target)
        iface = resolve(self.interface) if self.interface else None
        if isinstance(iface, type) and not getattr(iface, "_is_protocol", False):
            if not (isinstance(obj, type) and issubclass(obj, iface)):
                raise TypeError(f"{self.family} '{self.name}' ({self.target}, from {self.provided_by}) "
                                f"must be a subclass of {iface.__module__}.{iface.__qualname__}")
        elif not callable(obj):
            raise TypeError(f"{self.family} '{self.name}' ({self.target}) is not callable")
        return obj

    def load_schema(self) -> type | None:
        """The config dataclass for this implementation, or None when it takes no options."""
        schema = resolve(self.schema) if self.schema is not None else None
        if schema is not None and not dataclasses.is_dataclass(schema):
            raise TypeError(f"{self.family} '{self.name}': schema {schema!r} is not a dataclass")
        return schema

    def availability(self) -> Availability:
        """(ok, reason): whether this implementation can run in this process, and why not."""
        if self.available is None:
            return True, ""
        try:
            ok, reason = resolve(self.available)()
        except Exception as exc:  # a broken check must not break listing
            return False, f"availability check failed: {type(exc).__name__}: {exc}"
        return bool(ok), str(reason)

    @property
    def provided_by(self) -> str:
        return f"{self.provider} {self.version}".strip()


class Registry:
    """Names → implementations for one component family (see :data:`FAMILIES`)."""

    def __init__(self, family: str, description: str, interface: str | None = None,
                 failures: Callable[[], list[str]] = list):
        self.family = family
        self.description = description
        self.interface = interface
        self._entries: dict[str, Entry] = {}
        self._failures = failures
        self._provider: tuple[str, str, str] = (*LOCAL_PROVIDER, "")

    def register(self, name: str, target: Any, *, schema: Any = None, description: str = "",
                 capabilities: dict[str, Any] | None = None,
                 available: Callable[[], Availability] | str | None = None,
                 override: bool = False) -> Entry:
        """Add ``name``. Re-registering the same target is a no-op; a different one needs ``override``.

        An entry registered with ``override=True`` wins whatever the plugin load order: a later plain
        registration of the same name leaves it in place.
        """
        provider, version, plugin = self._provider
        entry = Entry(name, self.family, target, provider, version, plugin, schema, description,
                      dict(capabilities or {}), available, self.interface, override)
        old = self._entries.get(name)
        if old is not None and not override:
            if old.target == entry.target or old.overrides:
                return old
            raise DuplicateComponentError(
                f"{self.family} '{name}' is registered twice: by {old.provided_by or old.plugin} "
                f"({old.target}) and by {entry.provided_by or plugin} ({target}); "
                "pass override=True to replace it on purpose")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def get(self, name: str) -> Entry:
        """The entry for ``name``, or an :class:`UnknownComponentError` listing the choices."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            choices = {n: e.provided_by for n, e in self._entries.items()}
            raise UnknownComponentError(self.family, name, choices, self._failures()) from None

    def load(self, name: str) -> Any:
        return self.get(name).load()

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter([self._entries[n] for n in self.names()])

    def __len__(self) -> int:
        return len(self._entries)


class Registries:
    """All family registries, the record of plugin load failures, and who is registering right now."""

    def __init__(self) -> None:
        self.failures: dict[str, str] = {}
        self._by_family = {
            fam.name: Registry(fam.name, fam.description, fam.interface, failures=self.failure_lines)
            for fam in FAMILIES.values()
        }

    def __getattr__(self, family: str) -> Registry:
        try:
            return self.__dict__["_by_family"][family]
        except KeyError:
            raise AttributeError(family) from None

    def __getitem__(self, family: str) -> Registry:
        return self._by_family[family]

    def __iter__(self) -> Iterator[Registry]:
        return iter(self._by_family.values())

    def families(self) -> list[str]:
        return list(self._by_family)

    def failure_lines(self) -> list[str]:
        return [f"{name} ({err})" for name, err in self.failures.items()]

    @contextlib.contextmanager
    def providing(self, provider: str, version: str, plugin: str) -> Iterator[None]:
        """Attribute every ``register`` call inside the block to ``provider`` (a distribution)."""
        saved = {r.family: r._provider for r in self}
        for r in self:
            r._provider = (provider, version, plugin)
        try:
            yield
        finally:
            for r in self:
                r._provider = saved[r.family]

    def components_of(self, plugin: str) -> dict[str, list[str]]:
        """``{family: [names]}`` that ``plugin`` (an entry-point name) registered: what ``plugins.json``
        records, so a saved config's components can be traced back to their package."""
        out = {r.family: [e.name for e in r if e.plugin == plugin] for r in self}
        return {family: names for family, names in out.items() if names}

    def require(self, wanted: Iterable[tuple[str, str]], plugins: Sequence[dict[str, Any]] = ()) -> None:
        """Check every ``(family, name)`` in ``wanted`` is registered; otherwise raise one
        :class:`UnknownComponentError` naming each missing one and, from ``plugins`` (the ``plugins.json``
        records of the artifact that named them), the package that provided it and how to install it."""
        errors = []
        for family, name in wanted:
            try:
                self[family].get(name)
            except UnknownComponentError as exc:
                errors.append(exc.with_origin(component_origin(family, name, plugins)))
        if errors:
            raise unknown_components(errors)

    def snapshot(self) -> dict[str, dict[str, Entry]]:
        """Every family's entries as they are now (see :meth:`restore`)."""
        return {r.family: dict(r._entries) for r in self}

    def restore(self, snapshot: dict[str, dict[str, Entry]]) -> None:
        """Put back the entries of a :meth:`snapshot`: a plugin that fails halfway through registering
        leaves nothing behind, and an entry it replaced with ``override=True`` is the original again."""
        for r in self:
            r._entries = dict(snapshot[r.family])
