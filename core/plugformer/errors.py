"""User-facing errors: each renders as one line that names the bad value and the valid choices.

The CLI prints ``str(error)`` and exits non-zero; it never shows a traceback for these.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class PlugformerError(Exception):
    """Base class for every error a user can act on. ``str()`` is a single line."""


class UnknownComponentError(PlugformerError, KeyError):
    """A name that no plugin registered in a family."""

    def __init__(self, family: str, name: str, choices: dict[str, str], failures: Iterable[str] = ()):
        self.family, self.name, self.choices = family, name, choices
        self.failures = list(failures)
        super().__init__(self._message())

    def _message(self) -> str:
        offered = ", ".join(f"{n} ({p})" for n, p in sorted(self.choices.items())) or "none"
        msg = f"unknown {self.family} '{self.name}'{did_you_mean(self.name, self.choices)}; "
        msg += f"registered {self.family} choices: {offered}"
        if self.failures:
            msg += "; plugins that failed to load: " + ", ".join(self.failures)
        return msg

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


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
