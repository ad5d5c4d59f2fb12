"""The user's own text: a ``.txt`` / ``.jsonl`` file or a directory of them.

A ``.txt`` file is one document; each line of a ``.jsonl`` file is one document (its ``text_field``).
Documents are split into train/val by a stable hash of ``file:line``; a corpus of a single document
(one ``.txt`` file) is split by holding out its tail instead.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from plugformer import ConfigError
from plugformer.interfaces import SPLITS, TextSource
from plugformer_text.split import check_fraction, val_keys

SUFFIXES = (".txt", ".jsonl")


@dataclass(frozen=True)
class SourceFile:
    """One input file: where it is, how it is named in keys, and how many documents it may hold."""

    rel: str
    path: Path
    lines: int  # documents it can yield: 1 for .txt, the line count for .jsonl

    @property
    def is_jsonl(self) -> bool:
        return self.path.suffix == ".jsonl"

    def keys(self) -> Iterator[str]:
        """Split keys of the documents this file can yield, in order."""
        if not self.is_jsonl:
            yield self.rel
        else:
            for n in range(1, self.lines + 1):
                yield f"{self.rel}:{n}"


def count_lines(path: Path) -> int:
    """Number of lines in ``path``, counting a last line without a trailing newline."""
    count, last = 0, b"\n"
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


def find_files(root: Path) -> list[SourceFile]:
    """The usable input files at ``root`` (a file, or a directory searched recursively), sorted."""
    if root.is_file():
        if root.suffix not in SUFFIXES:
            raise ConfigError(f"data.path {str(root)!r} must be a .txt or .jsonl file or a directory of them")
        paths = [(root.name, root)]
    else:
        paths = sorted((p.relative_to(root).as_posix(), p) for p in root.rglob("*")
                       if p.suffix in SUFFIXES and p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(root).parts))
    return [SourceFile(rel, p, count_lines(p) if p.suffix == ".jsonl" else 1) for rel, p in paths]


class TextFileSource(TextSource):
    """Documents from the files at ``config.path``, in sorted path order."""

    def __init__(self, config: Any):
        super().__init__(config)
        raw = str(getattr(config, "path", "") or "")
        if raw in ("", "???"):
            raise ConfigError("data.path is required: set data.path=<a .txt/.jsonl file or a directory of them>")
        self.val_fraction = check_fraction(config.val_fraction, "data")
        self.text_field = str(config.text_field)
        self.root = Path(raw).expanduser().resolve()
        if not self.root.exists():
            raise ConfigError(f"data.path {raw!r} does not exist (resolved to {self.root})")

    @cached_property
    def _files(self) -> list[SourceFile]:
        files = [f for f in find_files(self.root) if f.lines > 0]
        if not files:
            raise ConfigError(f"data.path {str(self.root)!r} holds no non-empty .txt or .jsonl files")
        return files

    @cached_property
    def _val(self) -> set[str]:
        return val_keys([k for f in self._files for k in f.keys()], self.val_fraction)

    @property
    def _single(self) -> bool:
        """True when the corpus is one document, which is then split by holding out its tail."""
        return len(self._files) == 1 and self._files[0].lines == 1

    def _records(self, f: SourceFile) -> Iterator[tuple[str, str]]:
        """(split key, document) for each non-empty document of ``f``."""
        if not f.is_jsonl:
            text = self._read_text(f.path)
            if text:
                yield f.rel, text
            return
        with f.path.open("r", encoding="utf-8-sig") as fh:
            for n, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"{f.path}:{n}: not valid JSON ({exc.msg})") from None
                text = record.get(self.text_field) if isinstance(record, dict) else None
                if not isinstance(text, str):
                    raise ConfigError(f"{f.path}:{n}: record has no string field {self.text_field!r} "
                                      "(set data.text_field)")
                if text:
                    yield f"{f.rel}:{n}", text

    @staticmethod
    def _read_text(path: Path) -> str:
        try:
            return path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path} is not valid UTF-8 (byte {exc.start})") from None

    def documents(self, split: str) -> Iterator[str]:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        if self._single:
            yield from self._split_single(split)
            return
        want_val = split == "val"
        for f in self._files:
            for key, text in self._records(f):
                if (key in self._val) == want_val:
                    yield text

    def _split_single(self, split: str) -> Iterator[str]:
        """The lone document's head (train) or last ``val_fraction`` (val), cut at a line break."""
        text = next((t for _, t in self._records(self._files[0])), "")
        cut = len(text)
        if self.val_fraction > 0:
            cut = int(len(text) * (1.0 - self.val_fraction))
            newline = text.find("\n", cut)
            cut = newline + 1 if 0 <= newline < len(text) - 1 else cut
        part = text[:cut] if split == "train" else text[cut:]
        if part:
            yield part

    def fingerprint(self) -> str:
        h = hashlib.sha256(f"text-v1|{self.text_field}|{self.val_fraction!r}".encode())
        for f in self._files:
            st = f.path.stat()
            h.update(f"|{f.path}:{st.st_size}:{st.st_mtime_ns}".encode())
        return "text-" + h.hexdigest()[:16]
