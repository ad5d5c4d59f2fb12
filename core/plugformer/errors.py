"""User-facing errors: each renders as one line that names the bad value and the valid choices.

The CLI prints ``str(error)`` and exits non-zero; it never shows a traceback for these.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Sequence
from typing import Any


class PlugformerError(Exception):
    """Base class for every error a user can act on. ``str()`` is a single line."""


class UnknownComponentError(PlugformerError, KeyError):
    """A name that no plugin registered in a family. ``origin`` (see :func:`component_origin`) says which
    package provided it where a saved config was written, and how to install that package."""

    def __init__(self, family: str, name: str, choices: dict[str, str], failures: Iterable[str] = (),
                 origin: str = ""):
        self.family, self.name, self.choices = family, name, choices
        self.failures = list(failures)
        self.origin = origin
        super().__init__(self._message())

    def _message(self) -> str:
        offered = ", ".join(f"{n} ({p})" for n, p in sorted(self.choices.items())) or "none"
        msg = f"unknown {self.family} '{self.name}'{did_you_mean(self.name, self.choices)}; "
        if self.origin:
            msg += f"{self.origin}; "
        msg += f"registered {self.family} choices: {offered}"
        if self.failures:
            msg += "; plugins that failed to load: " + ", ".join(self.failures)
        return msg

    def with_origin(self, origin: str) -> UnknownComponentError:
        """The same error with an ``origin`` clause (unchanged when ``origin`` is empty)."""
        return UnknownComponentError(self.family, self.name, self.choices, self.failures, origin) if origin else self

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class UnknownComponentsError(UnknownComponentError):
    """Several unknown names found at once (``validate`` reports them all): one line, each name's
    message in turn. ``errors`` holds them; ``family``/``name`` are the first one's."""

    def __init__(self, errors: Sequence[UnknownComponentError]):
        self.errors = list(errors)
        first = self.errors[0]
        self.family, self.name, self.choices, self.failures, self.origin = (
            first.family, first.name, first.choices, first.failures, first.origin)
        PlugformerError.__init__(self, "; ".join(str(e) for e in self.errors))


def unknown_components(errors: Sequence[UnknownComponentError]) -> UnknownComponentError:
    """One error for every unknown name in ``errors`` (duplicates dropped): the error itself when there is
    one, else an :class:`UnknownComponentsError` listing them all."""
    unique = list({(e.family, e.name): e for e in errors}.values())
    return unique[0] if len(unique) == 1 else UnknownComponentsError(unique)


def _installed_version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def component_origin(family: str, name: str, plugins: Sequence[dict[str, Any]],
                     installed: Callable[[str], str | None] | None = None) -> str:
    """Where ``family`` ``name`` came from when an artifact was written, from its ``plugins.json`` records
    (each ``{"name", "dist", "version", "components": {family: [names]}, ...}``), and what to do about it:
    ``"it was provided by plugformer-example-plugin 0.2.0 (see plugins.json); install it: pip install
    plugformer-example-plugin==0.2.0"``. ``installed(dist)`` is the version installed here, or None
    (default: what ``importlib.metadata`` finds). Records written before plugins.json listed components
    name the distributions that are not installed here instead. Empty when the records say nothing useful."""
    installed = installed or _installed_version
    records = [p for p in plugins if isinstance(p, dict)]

    def components(record: dict[str, Any]) -> dict[str, Any]:
        value = record.get("components")
        return value if isinstance(value, dict) else {}

    def install(dist: str, version: str) -> str:
        return f"pip install {dist}=={version}" if version else f"pip install {dist}"

    for p in records:
        if name not in (components(p).get(family) or ()):
            continue
        dist, version, plugin = str(p.get("dist") or ""), str(p.get("version") or ""), str(p.get("name") or "")
        if not dist or dist.startswith("<"):  # registered by code outside any installed package
            return f"it was registered by plugin '{plugin}' (see plugins.json), which is not part of a package"
        said = f"it was provided by {dist} {version}".rstrip() + " (see plugins.json)"
        here = installed(dist)
        if here is None:
            return f"{said}; install it: {install(dist, version)}"
        if version and here != version:
            return f"{said}, but {dist} {here} is installed here; install that version: {install(dist, version)}"
        return (f"{said}; {dist} is installed, but its plugin '{plugin}' did not register it here "
                "(see `plugformer plugins`)")
    if any("components" in p for p in records):
        return ""  # a manifest listing components, none of them this one: no plugin of that run provided it
    missing = sorted({(str(p["dist"]), str(p.get("version") or "")) for p in records
                      if p.get("dist") and not str(p["dist"]).startswith("<") and p.get("status", "loaded") == "loaded"
                      and installed(str(p["dist"])) is None})
    if not missing:
        return ""
    return ("it may come from a plugin the artifact was written with that is not installed here (see plugins.json): "
            + ", ".join(f"{f'{d} {v}'.rstrip()} ({install(d, v)})" for d, v in missing))


class DuplicateComponentError(PlugformerError):
    """Two providers claimed one name in one family without asking to override."""


class PluginLoadError(PlugformerError):
    """A plugin failed to load while strict mode was on."""


class ConfigError(PlugformerError):
    """A composed config that cannot be used: bad key, bad type, bad value, bad combination."""


class UnavailableError(PlugformerError):
    """A component that exists but cannot run here (missing dependency, no CUDA, ...)."""


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or an empty string."""
    guess = difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{guess[0]}'?)" if guess else ""
