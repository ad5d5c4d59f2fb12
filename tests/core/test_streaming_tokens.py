"""A large text file is tokenized as a stream: read in pieces, tokenized in batches, written straight to the
memory-mapped token cache, so memory stays bounded whatever the file size; bytes that are not UTF-8 are one
line naming the file and the offset."""
from __future__ import annotations

import json
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import plugformer.tokens as tokens
from plugformer import ConfigError
from plugformer.interfaces import DocumentPart, TextSource
from plugformer.tokens import tokenize_to_cache
from plugformer_text import text_source
from plugformer_text.byte_tokenizer import ByteTokenizer
from plugformer_text.schemas import ByteTokenizerConfig, TextFileSourceConfig
from plugformer_text.text_source import TextFileSource, read_pieces

MB = 1 << 20


def book(path: Path, megabytes: int) -> str:
    """A one-document corpus of about ``megabytes`` MB with multi-byte characters."""
    line = "the quick brown fox jumps over the lazy dog, naïve café 🚀 {}\n"
    text = "".join(line.format(i) for i in range(megabytes * MB // len(line.encode())))
    path.write_text(text, encoding="utf-8")
    return text


class Parts(TextSource):
    def __init__(self, docs: list[str]):
        super().__init__(None)
        self.docs = docs

    def documents(self, split: str) -> Iterator[str]:
        yield from self.docs

    def fingerprint(self) -> str:
        return "parts-" + str(abs(hash(tuple(self.docs))))


def test_a_document_in_pieces_gets_one_end_of_document_token(tmp_path):
    tok = ByteTokenizer(ByteTokenizerConfig())
    ids = tokenize_to_cache(Parts([DocumentPart("ab"), DocumentPart("c"), "d", "e"]), tok, "train", tmp_path)
    eos = tok.eos_id
    assert ids.tolist() == [*b"abcd", eos, *b"e", eos]
    meta = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert meta["documents"] == 2


def test_a_file_is_read_in_pieces_cut_after_line_breaks(tmp_path):
    path = tmp_path / "book.txt"
    text = book(path, 1)
    pieces = list(read_pieces(path, piece_bytes=64 * 1024))
    assert "".join(pieces) == text and len(pieces) > 10
    assert all(isinstance(p, DocumentPart) and p.endswith("\n") for p in pieces[:-1])
    assert not isinstance(pieces[-1], DocumentPart)
    assert max(len(p.encode()) for p in pieces) <= 64 * 1024


def test_a_line_longer_than_a_piece_is_cut_between_characters(tmp_path):
    path = tmp_path / "one-line.txt"
    path.write_text("é🚀" * 5000, encoding="utf-8")
    assert "".join(read_pieces(path, piece_bytes=1001)) == "é🚀" * 5000


def peak_while_tokenizing(path: Path, cache: Path) -> tuple[int, np.ndarray]:
    """Peak Python memory (bytes) while tokenizing ``path`` with the byte tokenizer, and the tokens."""
    source = TextFileSource(TextFileSourceConfig(path=str(path), val_fraction=0.0))
    tok = ByteTokenizer(ByteTokenizerConfig())
    tokenize_to_cache(Parts(["warm up"]), tok, "train", cache, progress=False)  # imports done before measuring
    tracemalloc.start()
    try:
        ids = tokenize_to_cache(source, tok, "train", cache, progress=False)
        return tracemalloc.get_traced_memory()[1], ids
    finally:
        tracemalloc.stop()


def test_a_large_file_tokenizes_in_bounded_memory_with_the_same_tokens(tmp_path, monkeypatch):
    """Through pieces and batches of 64 KB, a file four times larger needs no more memory, and less than the
    file itself, where reading it whole holds the text and its ids (one 8-byte list entry per byte) at once."""
    monkeypatch.setattr(text_source, "PIECE_BYTES", 64 * 1024)
    monkeypatch.setattr(tokens, "BATCH_CHARS", 64 * 1024)
    small, large = tmp_path / "small" / "book.txt", tmp_path / "large" / "book.txt"
    small.parent.mkdir(), large.parent.mkdir()
    book(small, 2)
    text = book(large, 8)
    size = large.stat().st_size
    peak_small, _ = peak_while_tokenizing(small, tmp_path / "cache")
    peak_large, ids = peak_while_tokenizing(large, tmp_path / "cache")
    assert peak_large < 1.25 * peak_small + MB, f"{peak_small / MB:.1f} MB for 2 MB, {peak_large / MB:.1f} MB for 8 MB"
    assert peak_large < size, f"peak {peak_large / MB:.1f} MB while tokenizing a {size / MB:.1f} MB file"
    assert isinstance(ids, np.memmap) and len(ids) == size + 1  # one byte per token, one end-of-document
    assert bytes(np.asarray(ids[:-1], dtype=np.uint8)) == text.encode() and ids[-1] == ByteTokenizer(None).eos_id


def test_one_document_corpus_holds_out_its_tail_while_streaming(tmp_path, monkeypatch):
    monkeypatch.setattr(text_source, "PIECE_BYTES", 64 * 1024)
    path = tmp_path / "book.txt"
    text = book(path, 1)
    source = TextFileSource(TextFileSourceConfig(path=str(path), val_fraction=0.1))
    train, val = "".join(source.documents("train")), "".join(source.documents("val"))
    assert train + val == text and train.endswith("\n") and 0.05 < len(val) / len(text) < 0.15


@pytest.mark.parametrize("name, content", [
    ("latin1.txt", "caf\u00e9\n".encode() * 50_000 + "d\u00e9j\u00e0 vu\n".encode("latin-1")),
    ("records.jsonl", b'{"text": "fine"}\n' * 10 + b'{"text": "caf\xe9"}\n'),
])
def test_bytes_that_are_not_utf8_are_one_line_naming_the_file_and_offset(tmp_path, monkeypatch, name, content):
    monkeypatch.setattr(text_source, "PIECE_BYTES", 64 * 1024)
    path = tmp_path / name
    path.write_bytes(content)
    offset = content.index(b"\xe9" if name.endswith(".jsonl") else b"d\xe9") + (0 if name.endswith(".jsonl") else 1)
    source = TextFileSource(TextFileSourceConfig(path=str(path), val_fraction=0.0))
    with pytest.raises(ConfigError) as err:
        list(source.documents("train"))
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and f"byte 0xe9 at offset {offset}" in msg, msg


def test_records_that_are_not_utf8_are_one_line_naming_the_file_and_offset(tmp_path):
    from plugformer_training.records import read_jsonl

    path = tmp_path / "train.jsonl"
    content = b'{"prompt": "a", "response": "b"}\n{"prompt": "caf\xe9", "response": "x"}\n'
    path.write_bytes(content)
    with pytest.raises(ConfigError) as err:
        read_jsonl(path)
    offset = content.index(b"\xe9")
    assert f"{path}:2: not valid UTF-8: byte 0xe9 at offset {offset}" in str(err.value)
