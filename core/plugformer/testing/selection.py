"""Which implementations the kit tests, read from the command-line options, and how tests get them.

Every contract test is one function parametrized over ``Entry`` objects (ids ``family:name``); the
entries a test applies to are chosen from what each implementation declares (``needs``: capabilities
that must be true; ``declares``: capability keys that must be present). Unavailable implementations
and ones whose schema has required fields the kit cannot fill in become skipped cases with the reason,
so a report shows them instead of silently leaving them out.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pytest

from plugformer.registry import FAMILIES, Entry, Registries
from plugformer.testing.construct import registries, unfilled_fields


def canonical_dist(name: str) -> str:
    """A distribution name as packaging compares them (``My_Plugin`` == ``my-plugin``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _names(value: str | None) -> list[str]:
    return [n.strip() for n in (value or "").split(",") if n.strip()]


@dataclass(frozen=True)
class KitOptions:
    """The selection: families, implementation names (``name`` or ``family:name``) and provider."""

    families: tuple[str, ...] = tuple(FAMILIES)
    only: tuple[str, ...] = ()
    provider: str = ""

    @classmethod
    def from_config(cls, config: pytest.Config) -> KitOptions:
        families = _names(config.getoption("plugformer_family", "")) or list(FAMILIES)
        return cls(tuple(families), tuple(_names(config.getoption("plugformer_only", ""))),
                   str(config.getoption("plugformer_provider", "") or ""))

    def wants(self, entry: Entry) -> bool:
        """Whether ``entry`` is in the selection."""
        if entry.family not in self.families:
            return False
        if self.only and entry.name not in self.only and f"{entry.family}:{entry.name}" not in self.only:
            return False
        return not self.provider or canonical_dist(entry.provider) == canonical_dist(self.provider)

    def selected(self, regs: Registries, family: str) -> list[Entry]:
        """The selected entries of ``family``, sorted by name."""
        return [e for e in regs[family] if self.wants(e)] if family in self.families else []

    def check(self) -> None:
        """Refuse a selection naming an unknown family, implementation or provider (a typo tests nothing)."""
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown:
            raise pytest.UsageError(f"--plugformer-family: unknown {', '.join(unknown)}; "
                                    f"families are: {', '.join(FAMILIES)}")
        regs = registries()
        entries = [e for r in regs for e in r if e.family in self.families]
        if self.provider and not any(canonical_dist(e.provider) == canonical_dist(self.provider)
                                     for e in entries):
            providers = sorted({e.provider for e in entries})
            raise pytest.UsageError(f"--plugformer-provider: no component of the selected families is "
                                    f"provided by '{self.provider}'; providers: {', '.join(providers)}")
        known = {e.name for e in entries} | {f"{e.family}:{e.name}" for e in entries}
        missing = [n for n in self.only if n not in known]
        if missing:
            raise pytest.UsageError(f"--plugformer-only: nothing registered as {', '.join(missing)} in the "
                                    f"selected families; registered: {', '.join(sorted(e.name for e in entries))}")

    def populated_families(self) -> list[str]:
        """The selected families in which at least one implementation is selected."""
        regs = registries()
        return [f for f in self.families if f in FAMILIES and self.selected(regs, f)]

    def describe(self) -> str:
        """One line for pytest's report header."""
        parts = [f"families={','.join(self.families)}"]
        if self.only:
            parts.append(f"only={','.join(self.only)}")
        if self.provider:
            parts.append(f"provider={self.provider}")
        return "plugformer conformance kit: " + " ".join(parts)


def skip_reason(entry: Entry, configured: bool, available: bool = True) -> str | None:
    """Why the kit cannot run ``entry`` here (unavailable, or needs configuration), else None.

    ``available=False``: the test does not run the implementation, so availability does not matter.
    """
    ok, reason = entry.availability() if available else (True, "")
    if not ok:
        return f"{entry.family} '{entry.name}' is unavailable here: {reason or 'no reason given'}"
    if configured:
        try:
            missing = unfilled_fields(entry)
        except Exception:  # noqa: BLE001 - a broken schema fails loudly in the schema contract instead
            return None
        if missing:
            return f"{entry.family} '{entry.name}' needs configuration: {', '.join(missing)}"
    return None


def _applies(entry: Entry, needs: Iterable[str], declares: Iterable[str]) -> bool:
    caps = entry.capabilities
    return all(caps.get(n) for n in needs) and all(d in caps for d in declares)


def parametrize(metafunc: pytest.Metafunc, marker: Any) -> None:
    """Parametrize ``entry`` (and ``prop`` for named properties) per the marker's selection."""
    options = KitOptions.from_config(metafunc.config)
    families = list(marker.args) or options.populated_families() or list(FAMILIES)
    needs = tuple(marker.kwargs.get("needs", ()))
    declares = tuple(marker.kwargs.get("declares", ()))
    configured = bool(marker.kwargs.get("configured", True))
    available = bool(marker.kwargs.get("available", True))
    regs = registries()
    params = []
    for family in families:
        for entry in options.selected(regs, family):
            if not _applies(entry, needs, declares):
                continue
            reason = skip_reason(entry, configured, available)
            marks = [pytest.mark.skip(reason=reason)] if reason else []
            if marker.kwargs.get("properties"):
                from plugformer.testing.properties import properties_for

                params += [pytest.param(entry, prop, id=f"{family}:{entry.name}:{prop.__name__}", marks=marks)
                           for prop in properties_for(entry)]
            else:
                params.append(pytest.param(entry, id=f"{family}:{entry.name}", marks=marks))
    argnames = ["entry", "prop"] if marker.kwargs.get("properties") else ["entry"]
    if not params:
        what = " and ".join(filter(None, [", ".join(needs), ", ".join(declares)])) or "implementations"
        none = [None] * len(argnames)
        params = [pytest.param(*none, id=f"{families[0]}:none",
                               marks=pytest.mark.skip(reason=f"no selected {'/'.join(families)} "
                                                             f"implementation applies ({what})"))]
    metafunc.parametrize(argnames, params)
