"""The user's own text: a ``.txt`` / ``.jsonl`` file or a directory of them.

A ``.txt`` file is one document; each line of a ``.jsonl`` file is one document (its ``text_field``).
Documents are split into train/val by a stable hash of ``file:line``; a corpus of a single document
(one ``.txt`` file) is split by holding out its tail instead.

Files are streamed: a ``.txt`` file larger than :data:`PIECE_BYTES` is yielded in pieces of about that
size, cut after a line break (every piece but the last a :class:`~plugformer.interfaces.DocumentPart`), so
a multi-GB file is tokenized in bounded memory. Bytes that are not UTF-8 are refused in one line naming
the file and the byte offset.
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
from plugformer.interfaces import SPLITS, DocumentPart, TextSource
from plugformer_text.split import check_fraction, val_keys

SUFFIXES = (".txt", ".jsonl")
#: a ``.txt`` file is read and yielded in pieces of about this many bytes (one piece when it is smaller)
PIECE_BYTES = 1 << 22
BOM = b"\xef\xbb\xbf"


def not_utf8(path: Path, offset: int, data: bytes, exc: UnicodeDecodeError) -> ConfigError:
    """One line naming the file and the absolute byte offset of the first byte that is not UTF-8."""
    return ConfigError(f"{path} is not valid UTF-8: byte 0x{data[exc.start]:02x} at offset {offset + exc.start} "
                       "(convert the file to UTF-8, e.g. iconv -f latin1 -t utf-8)")


def _decode(path: Path, offset: int, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise not_utf8(path, offset, data, exc) from None


def _cut(buf: bytes) -> int:
    """Where to end a piece in ``buf``: after its last line break, else at the last character boundary."""
    newline = buf.rfind(b"\n")
    if newline >= 0:
        return newline + 1
    end = len(buf)
    while end > 0 and len(buf) - end < 4 and buf[end - 1] & 0xC0 == 0x80:  # UTF-8 continuation bytes
        end -= 1
    return end - 1 if end > 0 and buf[end - 1] >= 0xC0 else len(buf)


def read_pieces(path: Path, start: int = 0, end: int | None = None, piece_bytes: int | None = None) -> Iterator[str]:
    """The UTF-8 text of bytes ``[start, end)`` of ``path`` (a leading byte-order mark dropped), in pieces of
    about ``piece_bytes`` (default :data:`PIECE_BYTES`) cut after line breaks: each piece that the next one
    continues is a :class:`DocumentPart`. Memory holds about two pieces."""
    piece_bytes = piece_bytes or PIECE_BYTES
    end = path.stat().st_size if end is None else end
    pending: str | None = None
    with path.open("rb") as fh:
        fh.seek(start)
        offset, buf = start, b""
        while True:
            want = min(piece_bytes - len(buf), end - offset - len(buf))
            if want > 0:
                chunk = fh.read(want)
                buf += chunk
                if len(chunk) < want:  # the file shrank while being read: stop at what is there
                    end = offset + len(buf)
            if offset == 0 and buf.startswith(BOM):
                buf, offset = buf[len(BOM):], len(BOM)
            if not buf:
                break
            take = len(buf) if offset + len(buf) >= end else _cut(buf)
            text = _decode(path, offset, buf[:take])
            offset, buf = offset + take, buf[take:]
            if text:
                if pending is not None:
                    yield DocumentPart(pending)
                pending = text
    if pending:
        yield pending


def split_point(path: Path, fraction: float) -> int:
    """Byte offset where the held-out tail of a one-document corpus starts: ``fraction`` of the file from its
    end, moved forward to just after the next line break (when one follows before the last byte)."""
    size = path.stat().st_size
    if fraction <= 0:
        return size
    cut = int(size * (1.0 - fraction))
    with path.open("rb") as fh:
        fh.seek(cut)
        position = cut
        while chunk := fh.read(1 << 16):
            newline = chunk.find(b"\n")
            if newline >= 0:
                found = position + newline
                return found + 1 if found < size - 1 else cut
            position += len(chunk)
    return cut


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
            for piece in read_pieces(f.path):
                yield f.rel, piece
            return
        with f.path.open("rb") as fh:
            offset = 0
            for n, raw in enumerate(fh, start=1):
                start = offset
                offset += len(raw)
                if n == 1 and raw.startswith(BOM):
                    raw, start = raw[len(BOM):], start + len(BOM)
                line = _decode(f.path, start, raw)
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
        f = self._files[0]
        if not f.is_jsonl:  # streamed: the cut is found by bytes, each side read in pieces
            cut = split_point(f.path, self.val_fraction)
            yield from read_pieces(f.path, 0, cut) if split == "train" else read_pieces(f.path, cut)
            return
        text = next((t for _, t in self._records(f)), "")
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
