"""The token pipeline: cached tokenization, cached tokenizer fitting, training and eval windows."""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from plugformer import ConfigError
from plugformer.interfaces import TextSource, Tokenizer
from plugformer.tokens import (
    WindowSampler, eval_windows, fit_tokenizer_cached, token_cache_path, token_dtype, tokenize_to_cache,
)


class ListSource(TextSource):
    """Documents held in memory."""

    def __init__(self, docs: dict[str, list[str]], tag: str = "a"):
        super().__init__(None)
        self.docs, self.tag = docs, tag

    def documents(self, split: str) -> Iterator[str]:
        yield from self.docs[split]

    def fingerprint(self) -> str:
        return f"list-{self.tag}"


class CountingBytes(Tokenizer):
    """Byte ids (eos 256) that counts how many documents it encoded."""

    def __init__(self, config=None):
        super().__init__(config)
        self.encoded = 0

    vocab_size = property(lambda self: 257)
    eos_id = property(lambda self: 256)

    def encode(self, text: str) -> list[int]:
        self.encoded += 1
        return list(text.encode())

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(i for i in ids if i < 256).decode()

    def save(self, directory: Path) -> None:
        (Path(directory) / "tok.txt").write_text("bytes")

    @classmethod
    def load(cls, config, directory: Path) -> CountingBytes:
        return cls(config)

    def fingerprint(self) -> str:
        return "counting-bytes"


class Fittable(CountingBytes):
    """A tokenizer that must be fitted; records fits and where it was loaded from."""

    fits = 0

    def __init__(self, config=None):
        super().__init__(config)
        self.fitted = False

    @property
    def needs_fit(self) -> bool:
        return not self.fitted

    def fit(self, texts: Iterable[str]) -> None:
        Fittable.fits += 1
        self.seen = list(texts)
        self.fitted = True

    @classmethod
    def load(cls, config, directory: Path) -> Fittable:
        tok = cls(config)
        tok.fitted = (Path(directory) / "tok.txt").read_text() == "bytes"
        return tok


DOCS = {"train": ["hello", "naïve 🚀", "", "abc"], "val": ["xyz" * 20]}


def test_tokenize_to_cache_layout_and_hit(tmp_path: Path):
    src, tok = ListSource(DOCS), CountingBytes()
    tokens = tokenize_to_cache(src, tok, "train", tmp_path)
    assert tokens.dtype == np.uint16
    expected = []
    for doc in DOCS["train"]:
        expected += list(doc.encode()) + [256]
    assert tokens.tolist() == expected
    assert tok.encoded == len(DOCS["train"])
    again = tokenize_to_cache(src, tok, "train", tmp_path)
    assert tok.encoded == len(DOCS["train"])  # served from the cache, nothing re-tokenized
    assert np.array_equal(again, tokens)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    other = tokenize_to_cache(ListSource(DOCS, tag="b"), tok, "train", tmp_path)
    assert tok.encoded == 2 * len(DOCS["train"])  # a different source fingerprint is a different file
    assert token_cache_path(src, tok, "val", tmp_path) != token_cache_path(src, tok, "train", tmp_path)
    assert len(other) == len(tokens)


def test_tokenize_to_cache_is_atomic(tmp_path: Path):
    class Exploding(ListSource):
        def documents(self, split: str) -> Iterator[str]:
            yield "fine"
            raise KeyboardInterrupt  # a crash halfway through

    tok = CountingBytes()
    with pytest.raises(KeyboardInterrupt):
        tokenize_to_cache(Exploding(DOCS), tok, "train", tmp_path)
    assert list(tmp_path.iterdir()) == []  # no partial file left to be trusted later
    assert not token_cache_path(Exploding(DOCS), tok, "train", tmp_path).exists()


def test_token_cache_env_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PLUGFORMER_CACHE", str(tmp_path))
    tokenize_to_cache(ListSource(DOCS), CountingBytes(), "val")
    assert list((tmp_path / "tokens").glob("val-*.uint16.bin"))


def test_token_dtype():
    assert token_dtype(257) == np.uint16 and token_dtype(65535) == np.uint16
    assert token_dtype(65536) == np.uint32 and token_dtype(200_000) == np.uint32


def test_fit_tokenizer_cached(tmp_path: Path):
    src = ListSource(DOCS)
    Fittable.fits = 0
    first = fit_tokenizer_cached(Fittable({"v": 1}), src, tmp_path)
    assert Fittable.fits == 1 and first.seen == DOCS["train"]
    second = fit_tokenizer_cached(Fittable({"v": 1}), src, tmp_path)
    assert Fittable.fits == 1 and not second.needs_fit  # loaded, not retrained
    fit_tokenizer_cached(Fittable({"v": 2}), src, tmp_path)
    assert Fittable.fits == 2  # another config trains again
    plain = CountingBytes()
    assert fit_tokenizer_cached(plain, src, tmp_path) is plain


def test_window_sampler_determinism_and_slices():
    tokens = np.arange(1000, dtype=np.uint16)
    sampler = WindowSampler(tokens, seed=7)
    batch = sampler.batch(3, 8, 16)
    assert batch.shape == (8, 17) and batch.dtype == torch.long
    assert torch.equal(batch[:, 1:] - batch[:, :-1], torch.ones(8, 16, dtype=torch.long))  # contiguous
    assert torch.equal(WindowSampler(tokens, seed=7).batch(3, 8, 16), batch)  # fresh sampler, same step
    assert not torch.equal(sampler.batch(4, 8, 16), batch)
    assert not torch.equal(WindowSampler(tokens, seed=8).batch(3, 8, 16), batch)
    for start, end in [(0, 4), (4, 8), (2, 3)]:
        assert torch.equal(sampler.batch(3, 8, 16, rows=slice(start, end)), batch[start:end])
    assert int(batch.max()) <= 999


def test_window_sampler_too_short():
    with pytest.raises(ConfigError, match=r"train split has 10 tokens.*seq_len 16"):
        WindowSampler(np.arange(10, dtype=np.uint16)).batch(0, 2, 16)


def test_eval_windows_fixed(tmp_path: Path):
    tokens = np.arange(100, dtype=np.uint16)
    batches = list(eval_windows(tokens, 2, 3, 8))
    assert [b.shape for b in batches] == [(3, 9), (3, 9)]
    assert batches[0][0].tolist() == list(range(0, 9)) and batches[0][1].tolist() == list(range(8, 17))
    assert batches[1][2].tolist() == list(range(40, 49))
    assert all(torch.equal(a, b) for a, b in zip(batches, eval_windows(tokens, 2, 3, 8)))
    everything = list(eval_windows(tokens, None, 5, 8))  # 12 windows fit: batches of 5, 5, 2
    assert [len(b) for b in everything] == [5, 5, 2] and everything[-1][-1, -1] == 96
    assert torch.equal(next(eval_windows(tokens, 1, 4, 8, rows=slice(2, 4))),
                       next(eval_windows(tokens, 1, 4, 8))[2:4])
    with pytest.raises(ConfigError, match=r"val split has 5 tokens.*seq_len 8"):
        list(eval_windows(np.arange(5, dtype=np.uint16), 1, 1, 8))


def test_memmap_round_trip_through_sampler(tmp_path: Path):
    src = ListSource({"train": ["abcdefgh" * 10], "val": ["q" * 40]})
    tokens = tokenize_to_cache(src, CountingBytes(), "train", tmp_path)
    batch = WindowSampler(tokens, seed=0).batch(0, 4, 8)
    assert batch.dtype == torch.long and set(batch.flatten().tolist()) <= set(b"abcdefgh") | {256}
    assert os.path.getsize(token_cache_path(src, CountingBytes(), "train", tmp_path)) == 81 * 2
