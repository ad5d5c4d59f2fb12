"""The built-in corpus: the running interpreter's own standard-library ``.py`` files.

Every Python install ships a few tens of megabytes of real, varied code, so a first run trains on
something meaningful with no download and no user data.
"""
from __future__ import annotations

import hashlib
import os
import platform
import sys
import sysconfig
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

from plugformer import ConfigError
from plugformer.interfaces import SPLITS, TextSource
from plugformer_text.split import check_fraction, val_keys


def stdlib_dir() -> Path:
    """The directory holding the pure-Python standard library of this interpreter."""
    return Path(sysconfig.get_paths()["stdlib"])


def walk_sources(root: Path, exclude: set[str]) -> list[str]:
    """Relative paths (``/``-separated) of every ``.py`` file under ``root``, sorted, skipping ``exclude``."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in exclude and not d.startswith(".")]
        rel_dir = Path(dirpath).relative_to(root)
        found.extend((rel_dir / f).as_posix() for f in filenames if f.endswith(".py"))
    return sorted(found)


class StdlibSource(TextSource):
    """Standard-library sources in sorted path order, up to ``max_bytes``; split by a hash of each path.

    Files that are not valid UTF-8 are skipped. The selection is computed once per instance.
    """

    def __init__(self, config: Any):
        super().__init__(config)
        self.val_fraction = check_fraction(config.val_fraction, "data")
        self.max_bytes = int(config.max_bytes)
        if self.max_bytes <= 0:
            raise ConfigError(f"data.max_bytes must be positive, got {config.max_bytes!r}")
        self.root = stdlib_dir()
        if not self.root.is_dir():
            raise ConfigError(f"data 'stdlib': the standard library directory {self.root} does not exist")

    @cached_property
    def _files(self) -> list[tuple[str, int]]:
        """(relative path, size in bytes) of the files taken, in order, until the cap is reached."""
        taken: list[tuple[str, int]] = []
        total = 0
        for rel in walk_sources(self.root, set(self.config.exclude)):
            if total >= self.max_bytes:
                break
            try:
                data = (self.root / rel).read_bytes()
                data.decode("utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            taken.append((rel, len(data)))
            total += len(data)
        if not taken:
            raise ConfigError(f"data 'stdlib': no readable .py files under {self.root}")
        return taken

    @cached_property
    def _val(self) -> set[str]:
        return val_keys([rel for rel, _ in self._files], self.val_fraction, [size for _, size in self._files])

    def files(self, split: str) -> list[str]:
        """Relative paths of the files in ``split``, in corpus order."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        want_val = split == "val"
        return [rel for rel, _ in self._files if (rel in self._val) == want_val]

    def documents(self, split: str) -> Iterator[str]:
        for rel in self.files(split):
            yield (self.root / rel).read_bytes().decode("utf-8")

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(f"stdlib-v1|{platform.python_implementation()}|{sys.version_info[:3]}|"
                 f"{self.max_bytes}|{self.val_fraction!r}|{sorted(self.config.exclude)}".encode())
        for rel, size in self._files:
            h.update(f"|{rel}:{size}".encode())
        return "stdlib-" + h.hexdigest()[:16]
