"""Several saved adapters on one base model, chosen per batch row: what ``Engine.add_adapter(name, dir)``
and a request's ``adapter=name`` run on.

The adapter entry that wrote a directory loads it under a name (``Adapter.load_named``); each forward
pass then routes row ``i`` through the adapter its request chose, or through the base weights
(``Adapter.route_rows``). Only entries declaring capability ``multi_adapter`` can do this (``lora``,
``qlora``), and all adapters of one set come from the same entry.
"""
from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

from plugformer.checkpoint import adapter_entry_name
from plugformer.checkpoint.loader import _check_adapter_weights, _one_line
from plugformer.errors import ConfigError, PlugformerError

if TYPE_CHECKING:
    from torch import nn

    from plugformer.interfaces import Adapter
    from plugformer.registry import Registries


class AdapterSet:
    """Named adapters loaded side by side, unmerged, on one base ``model``.

    ``add(name, directory)`` loads a saved adapter directory (e.g. ``<run>/checkpoints/last/adapter``);
    :attr:`model` is then the model to run (for LoRA a peft wrapper around the same base modules, which
    stay usable directly: the adapters live inside them). Inside ``route(model, names_per_row)`` each
    forward pass with ``len(names_per_row)`` rows runs row ``i`` through adapter ``names_per_row[i]``
    (``None``: the base). Outside a route, and for an all-``None`` batch, the model is the plain base.
    One route at a time per model: the engine's step loop enters one around each forward pass.
    """

    def __init__(self, model: nn.Module, registries: Registries):
        self.model = model
        self._registries = registries
        self._directories: dict[str, Path] = {}
        self._entry: str | None = None
        self._cls: type[Adapter] | None = None

    def names(self) -> list[str]:
        """The loaded adapters' names, in the order they were added."""
        return list(self._directories)

    def directory(self, name: str) -> Path:
        """Where adapter ``name`` was loaded from."""
        self.check([name])
        return self._directories[name]

    def add(self, name: str, directory: str | Path) -> nn.Module:
        """Load the adapter saved in ``directory`` under ``name``; returns (and keeps as :attr:`model`) the
        model now holding it. Refused in one line: an empty or taken name, a path that is not an adapter
        directory (or holds only pickle weights), an adapter entry that cannot load side by side or that
        differs from the one the set already uses, an adapter that does not fit the model."""
        from plugformer.interfaces import Adapter

        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"adapter name {name!r} must be a non-empty string")
        if name in self._directories:
            raise ConfigError(f"adapter '{name}' is already loaded (from {self._directories[name]}); "
                              f"loaded adapters: {', '.join(self._directories)}")
        directory = Path(directory).expanduser()
        if not directory.is_dir():
            raise ConfigError(f"adapter '{directory}' does not exist (expected a directory such as "
                              "<checkpoint>/adapter)")
        entry_name = adapter_entry_name(directory, self._registries)
        _check_adapter_weights(directory)
        if self._entry is not None and entry_name != self._entry:
            raise ConfigError(f"adapter '{name}' ({directory}) needs adapter entry '{entry_name}', but the adapters "
                              f"already loaded ({', '.join(self._directories)}) use '{self._entry}'; adapters "
                              "loaded side by side must come from one entry")
        entry = self._registries.adapter.get(entry_name)
        if not entry.capabilities.get("multi_adapter"):
            raise ConfigError(f"adapter entry '{entry_name}' needed by '{directory}' cannot load adapters side by "
                              "side (it does not declare capability multi_adapter)")
        ok, reason = entry.availability()
        if not ok:
            raise ConfigError(f"adapter '{entry_name}' needed by '{directory}' is unavailable here: {reason}")
        cls = entry.load()
        if not (isinstance(cls, type) and issubclass(cls, Adapter)):
            raise ConfigError(f"adapter '{entry_name}' cannot load saved adapters (it is not a "
                              "plugformer.interfaces.Adapter)")
        try:
            self.model = cls.load_named(self.model, directory, name)
        except PlugformerError:
            raise
        except (RuntimeError, KeyError, ValueError, OSError) as exc:
            raise ConfigError(f"adapter '{directory}' does not fit this model: {_one_line(exc)}") from None
        self._entry, self._cls = entry_name, cls
        self._directories[name] = directory
        return self.model

    def route(self, model: nn.Module, names_per_row: Sequence[str | None]) -> AbstractContextManager[None]:
        """A context manager: inside it, each forward pass of ``model`` (:attr:`model` or the base it wraps)
        with ``len(names_per_row)`` rows runs row ``i`` through adapter ``names_per_row[i]`` (None: the
        base). An unknown name is a :class:`ConfigError` naming the loaded ones; an all-``None`` batch
        costs nothing (no routing at all)."""
        rows = list(names_per_row)
        self.check([n for n in rows if n is not None])
        if self._cls is None or all(n is None for n in rows):
            return nullcontext()
        return self._cls.route_rows(model, rows)

    def check(self, names: Sequence[str]) -> None:
        """Refuse (one :class:`ConfigError` naming the loaded adapters) any of ``names`` that is not loaded: what
        the engine calls when a request arrives, so a bad ``adapter=`` fails before it is scheduled."""
        unknown = sorted({repr(n) for n in names if n not in self._directories})
        if unknown:
            raise ConfigError(f"unknown adapter {', '.join(unknown)}; loaded adapters: "
                              f"{', '.join(self._directories) or 'none'}")


__all__ = ["AdapterSet"]
