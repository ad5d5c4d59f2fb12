"""Documents in, chunks out: reading a knowledge base from files and splitting it into overlapping passages.

A :class:`Document` is one text with a ``source`` (its path relative to the directory given, or a line of a
.jsonl file) and a digest of its text; the index records each source's digest, so re-building adds only new
or changed documents. A :class:`Chunker` splits a document into windows of ``size`` tokens overlapping by
``overlap`` tokens; a chunk's id is ``"<source>#<n>"``. Tokens are whitespace-separated words by default (any
``spans`` function giving each token's character span can replace it); a chunk's text is an exact slice of
the document, so a passage shown to a user reads as it was written.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from plugformer.errors import ConfigError, PlugformerError
from plugformer.interfaces.retrieval import Chunk

#: file suffixes read as documents; other files in a directory are skipped (and counted)
DOCUMENT_SUFFIXES = (".txt", ".md", ".jsonl")
#: keys a .jsonl line may carry its text under, first present wins
JSONL_TEXT_KEYS = ("text", "content", "passage")
_WORD = re.compile(r"\S+\s*")


@dataclass(frozen=True)
class Document:
    """One text of a knowledge base: where it came from (``source``), the text, JSON metadata (a title)."""

    source: str
    text: str
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        """sha256 of the text and metadata: a changed document gets a new digest."""
        payload = json.dumps([self.text, dict(self.metadata)], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class TokenSpans(Protocol):
    """What a :class:`Chunker` needs of a tokenizer: each token's (start, end) character span in a text."""

    def __call__(self, text: str) -> list[tuple[int, int]]: ...


def word_spans(text: str) -> list[tuple[int, int]]:
    """Whitespace-separated words with their trailing whitespace, as character spans (the default tokens)."""
    spans = [(m.start(), m.end()) for m in _WORD.finditer(text)]
    if spans and spans[0][0] > 0:  # leading whitespace belongs to the first word
        spans[0] = (0, spans[0][1])
    return spans


@dataclass(frozen=True)
class Chunker:
    """Splits documents into chunks of ``size`` tokens overlapping by ``overlap`` (``0 <= overlap < size``)."""

    size: int = 200
    overlap: int = 40
    spans: TokenSpans = word_spans

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ConfigError(f"chunk.size must be a positive number of tokens, got {self.size!r}")
        if isinstance(self.overlap, bool) or not isinstance(self.overlap, int) or not 0 <= self.overlap < self.size:
            raise ConfigError(f"chunk.overlap must be a whole number in [0, chunk.size={self.size}), "
                              f"got {self.overlap!r}")

    def settings(self) -> dict[str, Any]:
        """What the index records about its chunking (a changed setting re-chunks every document)."""
        return {"size": self.size, "overlap": self.overlap,
                "tokens": "words" if self.spans is word_spans else getattr(self.spans, "__name__", "custom")}

    def chunks(self, document: Document) -> list[Chunk]:
        """``document``'s chunks, in order; a document with no text has none."""
        spans = self.spans(document.text)
        out: list[Chunk] = []
        step = self.size - self.overlap
        for n, first in enumerate(range(0, max(len(spans) - self.overlap, 1), step)):
            window = spans[first:first + self.size]
            if not window:
                break
            text = document.text[window[0][0]:window[-1][1]].strip()
            if text:
                out.append(Chunk(f"{document.source}#{n}", text,
                                 {**document.metadata, "source": document.source, "chunk": n}))
        return out


def read_documents(path: str | Path) -> Iterator[Document]:
    """The documents under ``path``: a .txt/.md file is one document (source: its path relative to ``path``'s
    directory), each line of a .jsonl file is one (``{"text": ...}`` plus optional ``"id"``/``"title"``;
    source ``<file>:<line>`` or the id); a directory is walked recursively in sorted order. A missing path, an
    unreadable file or a bad .jsonl line is a one-line :class:`~plugformer.errors.PlugformerError` naming it."""
    root = Path(path).expanduser()
    if not root.exists():
        raise PlugformerError(f"data.path={root} does not exist")
    if root.is_file():
        if root.suffix not in DOCUMENT_SUFFIXES:
            raise PlugformerError(f"data.path={root}: not a document file; readable suffixes: "
                                  f"{', '.join(DOCUMENT_SUFFIXES)}")
        yield from _read_file(root, root.name)
        return
    for file in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in DOCUMENT_SUFFIXES
                       and not any(part.startswith(".") for part in p.relative_to(root).parts)):
        yield from _read_file(file, file.relative_to(root).as_posix())


def _read_file(file: Path, source: str) -> Iterator[Document]:
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PlugformerError(f"cannot read {file}: {exc}") from None
    if file.suffix != ".jsonl":
        if text.strip():
            yield Document(source, text)
        return
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PlugformerError(f"{file}:{number}: not valid JSON ({exc.msg})") from None
        body = next((record[k] for k in JSONL_TEXT_KEYS if isinstance(record, dict) and k in record), None)
        if not isinstance(body, str):
            raise PlugformerError(f"{file}:{number}: a document line needs a string field "
                                  f"{' or '.join(JSONL_TEXT_KEYS)}")
        name = record.get("id")
        metadata = {k: v for k, v in record.items() if k not in JSONL_TEXT_KEYS and k != "id"
                    and isinstance(v, (str, int, float, bool))}
        yield Document(str(name) if name is not None else f"{source}:{number}", body, metadata)


def chunk_documents(documents: Iterable[Document], chunker: Chunker) -> Iterator[Chunk]:
    """Every chunk of every document, in order."""
    for document in documents:
        yield from chunker.chunks(document)


__all__ = ["DOCUMENT_SUFFIXES", "Chunker", "Document", "TokenSpans", "chunk_documents", "read_documents",
           "word_spans"]
