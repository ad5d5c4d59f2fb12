"""The built-in tokenizers (byte, bpe) and text sources (stdlib, text)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from plugformer import ConfigError
from plugformer_text.bpe_tokenizer import BPETokenizer
from plugformer_text.byte_tokenizer import ByteTokenizer
from plugformer_text.schemas import (
    BPETokenizerConfig, ByteTokenizerConfig, StdlibSourceConfig, TextFileSourceConfig,
)
from plugformer_text.stdlib_source import StdlibSource
from plugformer_text.text_source import TextFileSource

SAMPLES = [
    "hello world",
    "naïve café 数学 🚀",
    "def f(x):\n\tif x:\n\t\treturn x  # tab\r\n\n    pass\n",
    "  leading and trailing spaces  ",
    "a literal <|endoftext|> inside text",
    "",
]
CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "class Point:\n\tdef __init__(self, x, y):\n\t\tself.x, self.y = x, y\n",
    "Le café est naïf; 数学 is maths. 🚀 launches.\n",
] * 20


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    tok = BPETokenizer(BPETokenizerConfig(vocab_size=320, min_frequency=2))
    assert tok.needs_fit
    tok.fit(CORPUS)
    return tok


def test_byte_round_trip_and_save_load(tmp_path: Path):
    tok = ByteTokenizer(ByteTokenizerConfig())
    assert not tok.needs_fit and tok.vocab_size == 259
    assert (tok.eos_id, tok.pad_id, tok.mask_id) == (256, 257, 258)
    for text in SAMPLES:
        ids = tok.encode(text)
        assert all(0 <= i < 256 for i in ids)
        assert tok.decode(ids) == text
    assert tok.encode_batch(SAMPLES) == [tok.encode(t) for t in SAMPLES]
    assert tok.decode(tok.encode("ab") + [tok.eos_id, tok.pad_id, tok.mask_id]) == "ab"
    tok.save(tmp_path)
    assert json.loads((tmp_path / "tokenizer.json").read_text())["vocab_size"] == 259
    again = ByteTokenizer.load(ByteTokenizerConfig(), tmp_path)
    assert again.fingerprint() == tok.fingerprint() and again.vocab_size == 259


def test_byte_version_1_directory_still_loads_as_257_ids(tmp_path: Path):
    """Checkpoints written before <pad>/<mask> keep their 257-row embedding and token caches."""
    meta = {"type": "plugformer-byte", "version": 1, "vocab_size": 257, "eos_id": 256}
    (tmp_path / "tokenizer.json").write_text(json.dumps(meta), encoding="utf-8")
    old = ByteTokenizer.load(ByteTokenizerConfig(), tmp_path)
    assert (old.vocab_size, old.eos_id, old.pad_id, old.mask_id) == (257, 256, None, None)
    assert old.fingerprint() != ByteTokenizer(ByteTokenizerConfig()).fingerprint()


def test_bpe_round_trip_exact(bpe: BPETokenizer):
    assert not bpe.needs_fit and bpe.vocab_size <= 320
    assert (bpe.eos_id, bpe.pad_id, bpe.mask_id) == (0, 1, 2)
    for text in SAMPLES + CORPUS[:3] + ["quoting <pad> and <mask> literally"]:
        ids = bpe.encode(text)
        assert not {bpe.eos_id, bpe.pad_id, bpe.mask_id} & set(ids)  # literal specials are plain text
        assert bpe.decode(ids) == text
    assert bpe.encode_batch(SAMPLES) == [bpe.encode(t) for t in SAMPLES]
    assert bpe.decode([bpe.pad_id] + bpe.encode("x = 1") + [bpe.mask_id, bpe.eos_id]) == "x = 1"
    assert len(bpe.encode(CORPUS[0])) < len(CORPUS[0].encode())  # merges were learned


def test_bpe_save_load_identical(bpe: BPETokenizer, tmp_path: Path):
    bpe.save(tmp_path)
    assert (tmp_path / "tokenizer.json").is_file()
    again = BPETokenizer.load(bpe.config, tmp_path)
    assert again.fingerprint() == bpe.fingerprint()
    assert again.eos_id == bpe.eos_id and again.vocab_size == bpe.vocab_size
    assert again.encode_batch(SAMPLES) == bpe.encode_batch(SAMPLES)


def test_bpe_fit_is_deterministic_and_fingerprint_tracks_vocab(bpe: BPETokenizer):
    same = BPETokenizer(BPETokenizerConfig(vocab_size=320, min_frequency=2))
    same.fit(CORPUS)
    assert same.fingerprint() == bpe.fingerprint()
    other = BPETokenizer(BPETokenizerConfig(vocab_size=300, min_frequency=2))
    other.fit(CORPUS)
    assert other.fingerprint() != bpe.fingerprint()


def test_bpe_unfitted_and_too_small():
    tok = BPETokenizer(BPETokenizerConfig())
    with pytest.raises(RuntimeError, match="not trained"):
        tok.encode("x")
    with pytest.raises(ConfigError, match="vocab_size"):
        BPETokenizer(BPETokenizerConfig(vocab_size=258)).fit(["abc"])


def test_bpe_file_without_pad_and_mask_still_loads(bpe: BPETokenizer, tmp_path: Path):
    """A tokenizer.json from before <pad>/<mask> existed: eos works, pad/mask are None."""
    from tokenizers import pre_tokenizers, trainers

    old = BPETokenizer._blank()
    old.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    old.save(str(tmp_path / "tokenizer.json"))
    tok = BPETokenizer.load(BPETokenizerConfig(), tmp_path)
    assert (tok.eos_id, tok.pad_id, tok.mask_id) == (0, None, None)
    assert tok.fingerprint() != bpe.fingerprint()
    assert tok.decode(tok.encode(SAMPLES[1])) == SAMPLES[1]


def test_stdlib_deterministic_split_and_cap():
    cfg = StdlibSourceConfig(max_bytes=300_000, val_fraction=0.2)
    a, b = StdlibSource(cfg), StdlibSource(cfg)
    assert a.fingerprint() == b.fingerprint()
    train, val = a.files("train"), a.files("val")
    assert train and val and not set(train) & set(val)
    assert list(a.documents("train")) == list(b.documents("train"))
    assert not any(p.split("/")[0] in ("test", "tests", "idlelib", "site-packages") for p in train + val)
    sizes = [len(d.encode()) for d in a.documents("train")] + [len(d.encode()) for d in a.documents("val")]
    assert sum(sizes) - max(sizes) < 300_000  # stops adding files once the cap is reached
    bigger = StdlibSource(StdlibSourceConfig(max_bytes=400_000, val_fraction=0.2))
    assert bigger.fingerprint() != a.fingerprint()
    val_bytes = sum(len(d.encode()) for d in a.documents("val"))
    assert 0.2 * sum(sizes) <= val_bytes < sum(sizes)  # val holds val_fraction of the bytes, even when small


def test_stdlib_bad_config():
    with pytest.raises(ConfigError, match="val_fraction"):
        StdlibSource(StdlibSourceConfig(val_fraction=1.5))


def test_text_source_directory(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    for i in range(12):
        (tmp_path / f"doc{i:02d}.txt").write_text(f"plain document {i}\nnaïve 🚀\n", encoding="utf-8")
    with (tmp_path / "sub" / "records.jsonl").open("w", encoding="utf-8") as f:
        for i in range(30):
            f.write(json.dumps({"body": f"record {i}", "id": i}) + "\n")
        f.write("\n")
    (tmp_path / "ignored.csv").write_text("a,b\n")
    cfg = TextFileSourceConfig(path=str(tmp_path), text_field="body", val_fraction=0.25)
    src = TextFileSource(cfg)
    train, val = list(src.documents("train")), list(src.documents("val"))
    assert len(train) + len(val) == 42 and val and train
    assert not set(train) & set(val)
    assert "record 3" in train + val and "plain document 0\nnaïve 🚀\n" in train + val
    assert list(TextFileSource(cfg).documents("val")) == val
    fp = src.fingerprint()
    (tmp_path / "doc00.txt").write_text("changed and longer\n", encoding="utf-8")
    assert TextFileSource(cfg).fingerprint() != fp


def test_text_source_single_file_holds_out_tail(tmp_path: Path):
    path = tmp_path / "book.txt"
    text = "".join(f"line {i}\n" for i in range(100))
    path.write_text(text, encoding="utf-8")
    src = TextFileSource(TextFileSourceConfig(path=str(path), val_fraction=0.1))
    (train,), (val,) = list(src.documents("train")), list(src.documents("val"))
    assert train + val == text and val.startswith("line 9") and len(val) < len(text) * 0.15


def test_text_source_errors(tmp_path: Path):
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match="nope") as info:
        TextFileSource(TextFileSourceConfig(path=str(missing)))
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="required"):
        TextFileSource(TextFileSourceConfig())
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="empty"):
        TextFileSource(TextFileSourceConfig(path=str(empty))).fingerprint()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"other": 1}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="text"):
        list(TextFileSource(TextFileSourceConfig(path=str(bad), val_fraction=0.0)).documents("train"))


def test_registration_is_lazy():
    import plugformer_text
    from plugformer import Registries

    registries = Registries()
    plugformer_text.plugformer_register(registries)
    assert {"byte", "bpe", "wordpiece", "unigram", "hf", "sentencepiece"} <= set(registries.tokenizer.names())
    lossless = {n: registries.tokenizer.get(n).capabilities.get("lossless") for n in registries.tokenizer.names()}
    assert lossless == {"byte": True, "bpe": True, "wordpiece": False, "unigram": False, "hf": False,
                        "sentencepiece": False}
    assert {"stdlib", "text"} <= set(registries.data.names())
    assert registries.tokenizer.get("bpe").load_schema() is BPETokenizerConfig
    assert registries.data.load("text") is TextFileSource


def test_registration_imports_no_heavy_dependency():
    """Registering (what every CLI start does) must not import torch, tokenizers or sentencepiece."""
    code = ("import sys, plugformer_text; from plugformer import Registries; r = Registries(); "
            "plugformer_text.plugformer_register(r); r.tokenizer.get('sentencepiece').availability(); "
            "print([m for m in ('torch', 'tokenizers', 'sentencepiece') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
