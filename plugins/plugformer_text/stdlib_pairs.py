"""Docstring ↔ code pairs from the built-in corpus (the running interpreter's standard library), for training and
measuring a code-search embedder with no data brought: ``{"query": a function's docstring, "positive": its source
without the docstring}``.

The split is by top-level module (``json``, ``email``, ``asyncio``, ...): a seeded hash picks whole modules for
``val``, so no function of a held-out module, nor any copy of one's docstring or code elsewhere, is in ``train``.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import platform
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from plugformer import ConfigError
from plugformer.interfaces import SPLITS, TextSource
from plugformer_text.split import check_fraction, val_keys
from plugformer_text.stdlib_source import stdlib_dir, walk_sources


@dataclass(frozen=True)
class FunctionPair:
    """One documented function: ``id`` (``path:Qual.name``), its top-level ``module``, the docstring (``query``,
    cleaned of indentation) and the code without it (``positive``, dedented to the ``def``)."""

    id: str
    module: str
    query: str
    positive: str


def top_module(rel: str) -> str:
    """The top-level module a stdlib file belongs to: ``json/decoder.py`` → ``json``, ``os.py`` → ``os``."""
    first = rel.split("/", 1)[0]
    return first[:-3] if first.endswith(".py") else first


def _trivial(body: list[ast.stmt]) -> bool:
    """A body that does nothing worth finding: ``pass``, ``...``, ``raise NotImplementedError``."""
    def empty(stmt: ast.stmt) -> bool:
        if isinstance(stmt, ast.Pass):
            return True
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and stmt.value.value is Ellipsis:
            return True
        if isinstance(stmt, ast.Raise) and stmt.exc is not None:
            exc = stmt.exc.func if isinstance(stmt.exc, ast.Call) else stmt.exc
            return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"
        return False
    return all(empty(s) for s in body)


def _dedent(lines: list[str], column: int) -> str:
    """``lines`` with the ``def``'s indentation (``column`` characters) removed where it is whitespace."""
    return "\n".join(line[column:] if not line[:column].strip() else line.lstrip() for line in lines).strip("\n")


def function_pairs(rel: str, source: str, min_docstring_chars: int, min_code_lines: int) -> list[FunctionPair]:
    """The documented functions and methods of one file (its path ``rel`` under the stdlib) worth a pair: a
    docstring of at least ``min_docstring_chars`` characters and, without it, at least ``min_code_lines``
    non-blank lines that do something. A file that does not parse gives none."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    lines = source.splitlines()
    module = top_module(rel)
    found: list[FunctionPair] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                pair = _pair(child, name)
                if pair is not None:
                    found.append(pair)
                visit(child, f"{name}.<locals>.")

    def _pair(fn: ast.FunctionDef | ast.AsyncFunctionDef, name: str) -> FunctionPair | None:
        doc = ast.get_docstring(fn, clean=True)
        if not doc or len(doc.strip()) < min_docstring_chars or len(fn.body) < 2 or _trivial(fn.body[1:]):
            return None
        first = fn.body[0]
        if first.lineno == fn.lineno or fn.end_lineno is None or first.end_lineno is None:
            return None  # a docstring on the def line
        code = lines[fn.lineno - 1:first.lineno - 1] + lines[first.end_lineno:fn.end_lineno]
        if sum(1 for line in code if line.strip()) < min_code_lines:
            return None
        return FunctionPair(f"{rel}:{name}", module, doc.strip(), _dedent(code, fn.col_offset))

    visit(tree, "")
    return found


@dataclass(frozen=True)
class Corpus:
    """The files read (relative path, size in bytes) and their pairs, exact duplicates (same docstring and code)
    kept once."""

    files: tuple[tuple[str, int], ...]
    pairs: tuple[FunctionPair, ...]


@functools.lru_cache(maxsize=4)
def read_corpus(root: str, exclude: tuple[str, ...], max_bytes: int | None, min_docstring_chars: int,
                min_code_lines: int) -> Corpus:
    """The pairs of the ``.py`` files under ``root`` in sorted path order until ``max_bytes`` (None: all); files that
    are not UTF-8 are skipped. Parsing the whole library takes seconds, so a process does it once per setting."""
    files: list[tuple[str, int]] = []
    pairs: list[FunctionPair] = []
    seen: set[tuple[str, str]] = set()
    total = 0
    for rel in walk_sources(Path(root), set(exclude)):
        if max_bytes is not None and total >= max_bytes:
            break
        try:
            data = (Path(root) / rel).read_bytes()
            text = data.decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        files.append((rel, len(data)))
        total += len(data)
        for pair in function_pairs(rel, text, min_docstring_chars, min_code_lines):
            if (pair.query, pair.positive) not in seen:
                seen.add((pair.query, pair.positive))
                pairs.append(pair)
    return Corpus(tuple(files), tuple(pairs))


class StdlibPairs(TextSource):
    """Docstring → function pairs of the standard library, split by top-level module (see the module docstring).

    ``records(split)`` yields ``{"query", "positive", "id"}`` (plus ``"negative"``: another function of the same
    module, with ``hard_negatives``); ``documents(split)`` yields each pair's texts, which a tokenizer is fitted
    on. Files are read in sorted path order up to ``max_bytes`` (None: all), like ``data=stdlib``.
    """

    has_records = True

    def __init__(self, config: Any):
        super().__init__(config)
        self.val_fraction = check_fraction(config.val_fraction, "data")
        if self.val_fraction == 0:
            raise ConfigError("data.val_fraction must be above 0 for stdlib_pairs: the held-out modules are the "
                              "val split")
        self.max_bytes = None if config.max_bytes is None else int(config.max_bytes)
        if self.max_bytes is not None and self.max_bytes <= 0:
            raise ConfigError(f"data.max_bytes must be positive (or null: the whole library), got {config.max_bytes!r}")
        for key in ("min_docstring_chars", "min_code_lines"):
            if int(getattr(config, key)) < 1:
                raise ConfigError(f"data.{key} must be at least 1, got {getattr(config, key)!r}")
        self.root = stdlib_dir()
        if not self.root.is_dir():
            raise ConfigError(f"data 'stdlib_pairs': the standard library directory {self.root} does not exist")

    @cached_property
    def _corpus(self) -> Corpus:
        c = self.config
        return read_corpus(str(self.root), tuple(sorted(c.exclude)), self.max_bytes, int(c.min_docstring_chars),
                           int(c.min_code_lines))

    @property
    def _all(self) -> tuple[FunctionPair, ...]:
        return self._corpus.pairs

    @cached_property
    def val_modules(self) -> set[str]:
        """The held-out top-level modules: picked by a hash of ``seed`` and the module's name, in that order, until
        they hold ``val_fraction`` of the pairs (at least one module on each side)."""
        counts: dict[str, int] = {}
        for pair in self._all:
            counts[pair.module] = counts.get(pair.module, 0) + 1
        if len(counts) < 2:
            raise ConfigError(f"data 'stdlib_pairs': found documented functions in {len(counts)} module(s); a "
                              "module split needs at least 2 (raise data.max_bytes)")
        modules = sorted(counts)
        seed = int(self.config.seed)
        keyed = {f"{seed}/{m}": m for m in modules}
        held = val_keys(list(keyed), self.val_fraction, [counts[m] for m in modules])
        return {keyed[k] for k in held}

    @cached_property
    def _splits(self) -> dict[str, list[FunctionPair]]:
        val = [p for p in self._all if p.module in self.val_modules]
        held_texts = {p.query for p in val} | {p.positive for p in val}
        train = [p for p in self._all
                 if p.module not in self.val_modules and p.query not in held_texts and p.positive not in held_texts]
        return {"train": train, "val": val}

    def pairs(self, split: str) -> list[FunctionPair]:
        """The pairs of ``split``, in corpus order."""
        if split not in SPLITS:
            raise ConfigError(f"unknown split '{split}'; splits: {', '.join(SPLITS)}")
        return list(self._splits[split])

    def _negative(self, pair: FunctionPair, split: list[FunctionPair], by_module: dict[str, list[int]]) -> str:
        """Another function's code, from the same module when it has another (a hard negative), seeded."""
        rng = random.Random(f"{self.config.seed}/{pair.id}")
        siblings = [i for i in by_module[pair.module] if split[i].positive != pair.positive]
        pool = siblings or [i for i in range(len(split)) if split[i].positive != pair.positive]
        return split[rng.choice(pool)].positive if pool else pair.positive

    def records(self, split: str) -> Iterator[dict[str, Any]]:
        pairs = self.pairs(split)
        by_module: dict[str, list[int]] = {}
        if self.config.hard_negatives:
            for i, p in enumerate(pairs):
                by_module.setdefault(p.module, []).append(i)
        for pair in pairs:
            record = {"query": pair.query, "positive": pair.positive, "id": pair.id}
            if self.config.hard_negatives:
                record["negative"] = self._negative(pair, pairs, by_module)
            yield record

    def documents(self, split: str) -> Iterator[str]:
        """Each pair as one document, docstring then code (what a tokenizer is fitted on)."""
        for pair in self.pairs(split):
            yield f"{pair.query}\n{pair.positive}"

    def fingerprint(self) -> str:
        c = self.config
        h = hashlib.sha256()
        h.update(f"stdlib_pairs-v1|{platform.python_implementation()}|{sys.version_info[:3]}|{self.max_bytes}|"
                 f"{self.val_fraction!r}|{sorted(c.exclude)}|{c.min_docstring_chars}|{c.min_code_lines}|{c.seed}|"
                 f"{bool(c.hard_negatives)}".encode())
        for rel, size in self._corpus.files:
            h.update(f"|{rel}:{size}".encode())
        return "stdlib_pairs-" + h.hexdigest()[:16]


def held_out_pairs(config: Any = None) -> tuple[list[str], list[str]]:
    """The held-out split's (queries, positives), aligned: query ``i`` is the docstring of the function whose code
    is positive ``i``. What retrieval benchmarks and evaluations search: each docstring against every held-out
    function. ``config``: a :class:`~plugformer_text.schemas.StdlibPairsConfig` (None: the defaults, which
    ``plugformer train data=stdlib_pairs`` also uses, so a model trained with them never saw these functions)."""
    from plugformer_text.schemas import StdlibPairsConfig

    pairs = StdlibPairs(config if config is not None else StdlibPairsConfig()).pairs("val")
    return [p.query for p in pairs], [p.positive for p in pairs]


__all__ = ["Corpus", "FunctionPair", "StdlibPairs", "function_pairs", "held_out_pairs", "read_corpus", "top_module"]
