"""The tokenizers beyond byte/bpe (wordpiece, unigram, hf, sentencepiece) and ``plugformer tokenizer``.

Every tokenizer is held to what it declares: exact round trips where ``lossless`` is True, and the
documented normalized round trip where it is False.
"""
from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import pytest

from plugformer import ConfigError, PlugformerError
from plugformer_text.bpe_tokenizer import BPETokenizer
from plugformer_text.hf_file_tokenizer import HFFileTokenizer
from plugformer_text.schemas import (
    BPETokenizerConfig, HFFileTokenizerConfig, SentencePieceTokenizerConfig, UnigramTokenizerConfig,
    WordPieceTokenizerConfig,
)
from plugformer_text.specials import EOS, MASK, PAD
from plugformer_text.unigram_tokenizer import UnigramTokenizer
from plugformer_text.wordpiece_tokenizer import WordPieceTokenizer

NON_ASCII = "naïve café 数学 🚀"
CODE = "def f(x):\n\tif x:\n\t\treturn x  # tab\r\n\n    pass\n"
SAMPLES = [NON_ASCII, CODE, "  leading and trailing spaces  ", "quoting <|endoftext|> <pad> <mask> <unk>",
           "looks like a byte piece: <0x41> <0xZZ", "", " ", "\u00a0nbsp and \u3000ideographic space"]
CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "class Point:\n\tdef __init__(self, x, y):\n\t\tself.x, self.y = x, y\n",
    "Le café est naïf; 数学 is maths. 🚀 launches.\n",
    "naïve readers fit the vocabulary; if x: pass\n",
] * 20
SPM_AVAILABLE = importlib.util.find_spec("sentencepiece") is not None


def random_texts(n: int, seed: int = 0) -> list[str]:
    """Arbitrary valid UTF-8 strings from every plane (surrogates excluded: not encodable)."""
    rng = random.Random(seed)
    ranges = [(0, 0x7F), (0x80, 0x7FF), (0x800, 0xD7FF), (0xE000, 0xFFFF), (0x10000, 0x10FFFF)]
    out = []
    for _ in range(n):
        chars = [chr(rng.randint(*rng.choice(ranges))) for _ in range(rng.randint(0, 24))]
        out.append("".join(chars))
    return out


@pytest.fixture(scope="module")
def trained() -> dict[str, object]:
    """One fitted tokenizer of each trainable kind (trained once: the whole module stays fast)."""
    toks = {
        "bpe": BPETokenizer(BPETokenizerConfig(vocab_size=320)),
        "wordpiece": WordPieceTokenizer(WordPieceTokenizerConfig(vocab_size=200)),
        "unigram": UnigramTokenizer(UnigramTokenizerConfig(vocab_size=340)),
    }
    for tok in toks.values():
        assert tok.needs_fit
        tok.fit(CORPUS)
        assert not tok.needs_fit
    return toks


TRAINABLE = ["bpe", "wordpiece", "unigram"]


# -- contract shared by the trainable tokenizers ------------------------------------------------------
@pytest.mark.parametrize("kind", TRAINABLE)
def test_special_tokens_are_distinct_in_vocab_and_never_come_from_text(trained, kind):
    tok = trained[kind]
    ids = [tok.eos_id, tok.pad_id, tok.mask_id]
    assert len(set(ids)) == 3 and all(isinstance(i, int) and 0 <= i < tok.vocab_size for i in ids)
    assert [tok.hf.id_to_token(i) for i in ids] == [EOS, PAD, MASK]
    for text in SAMPLES + CORPUS[:4]:
        encoded = tok.encode(text)
        assert not set(ids) & set(encoded)
        assert all(0 <= i < tok.vocab_size for i in encoded)
    assert tok.decode([tok.pad_id, *tok.encode("x"), tok.mask_id, tok.eos_id]) == tok.decode(tok.encode("x"))


@pytest.mark.parametrize("kind", TRAINABLE)
def test_save_load_gives_identical_ids_and_fingerprint(trained, kind, tmp_path: Path):
    tok = trained[kind]
    tok.save(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer.json"]
    again = type(tok).load(tok.config, tmp_path)
    assert again.fingerprint() == tok.fingerprint() and again.fingerprint().startswith(kind)
    assert (again.vocab_size, again.eos_id, again.pad_id, again.mask_id) == \
        (tok.vocab_size, tok.eos_id, tok.pad_id, tok.mask_id)
    assert again.encode_batch(SAMPLES) == tok.encode_batch(SAMPLES) == [tok.encode(t) for t in SAMPLES]


@pytest.mark.parametrize("kind", TRAINABLE)
def test_hf_loads_what_a_trainable_tokenizer_wrote(trained, kind, tmp_path: Path):
    tok = trained[kind]
    tok.save(tmp_path)
    for path in (tmp_path, tmp_path / "tokenizer.json"):
        hf = HFFileTokenizer(HFFileTokenizerConfig(path=str(path)))
        assert not hf.needs_fit
        assert (hf.vocab_size, hf.eos_id, hf.pad_id, hf.mask_id) == \
            (tok.vocab_size, tok.eos_id, tok.pad_id, tok.mask_id)
        assert hf.encode_batch(SAMPLES) == tok.encode_batch(SAMPLES)
        # same text back wherever no <unk> is involved (hf drops every special token, <unk> included)
        assert [hf.decode(hf.encode(t)) for t in CORPUS[:4]] == [tok.decode(tok.encode(t)) for t in CORPUS[:4]]


@pytest.mark.parametrize("kind", TRAINABLE)
def test_fingerprint_tracks_the_vocabulary(trained, kind):
    tok = trained[kind]
    cls, cfg = type(tok), type(tok.config)
    other = cls(cfg(vocab_size=tok.config.vocab_size - 20))
    other.fit(CORPUS)
    assert other.fingerprint() != tok.fingerprint()


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_fit_is_deterministic(trained, kind):
    """Same corpus, same ids. (Not wordpiece: the library breaks ties between equally frequent pairs
    in hash order, so refits may differ; training fits once on the main rank and caches the result.)"""
    tok = trained[kind]
    same = type(tok)(tok.config)
    same.fit(CORPUS)
    assert same.fingerprint() == tok.fingerprint()


@pytest.mark.parametrize("kind,small", [("wordpiece", 4), ("unigram", 270)])
def test_untrained_and_too_small(kind, small):
    cls, cfg = {"wordpiece": (WordPieceTokenizer, WordPieceTokenizerConfig),
                "unigram": (UnigramTokenizer, UnigramTokenizerConfig)}[kind]
    with pytest.raises(RuntimeError, match="not trained"):
        cls(cfg()).encode("x")
    with pytest.raises(ConfigError, match="vocab_size"):
        cls(cfg(vocab_size=small)).fit(CORPUS)


# -- wordpiece: lossy, with a documented normal form --------------------------------------------------
def test_wordpiece_round_trip_is_the_normalized_word_sequence(trained):
    wp = trained["wordpiece"]
    assert wp.vocab_size <= 200
    assert wp.decode(wp.encode(CODE)) == "def f ( x ) : if x : return x <unk> tab pass"  # "#" never seen
    assert wp.decode(wp.encode("naïve café  数学\n")) == "naïve café 数 学"
    for text in CORPUS[:4]:
        assert wp.decode(wp.encode(text)) == wp.normalized(text)
    assert wp.decode(wp.encode("x = ∑")) == "x = <unk>"  # unseen characters: whole word becomes <unk>
    assert wp.unk_id not in (wp.eos_id, wp.pad_id, wp.mask_id)


def test_wordpiece_lowercase_option():
    wp = WordPieceTokenizer(WordPieceTokenizerConfig(vocab_size=200, lowercase=True))
    wp.fit(CORPUS)
    assert wp.decode(wp.encode("CLASS Point")) == "class point"


# -- unigram: exact except for U+2581 ------------------------------------------------------------------
def test_unigram_round_trips_everything_without_the_metaspace_character(trained):
    uni = trained["unigram"]
    assert uni.vocab_size <= 340
    for text in SAMPLES + CORPUS[:4] + [t.replace("▁", "") for t in random_texts(200)]:
        assert uni.decode(uni.encode(text)) == text, text
    assert len(uni.encode(CORPUS[0])) < len(CORPUS[0])  # pieces were learned
    assert uni.decode(uni.encode("a▁b")) == "a b"  # the documented exception: why lossless is False


# -- hf: any tokenizer.json --------------------------------------------------------------------------
def test_hf_finds_bert_style_names_and_honours_overrides(tmp_path: Path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4, "hello": 5, "world": 6, "</s>": 7}
    bert = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    bert.pre_tokenizer = pre_tokenizers.Whitespace()
    bert.add_special_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    path = tmp_path / "bert.json"
    bert.save(str(path))
    tok = HFFileTokenizer(HFFileTokenizerConfig(path=str(path)))
    assert (tok.vocab_size, tok.eos_id, tok.pad_id, tok.mask_id) == (8, 7, 0, 4)  # "</s>" before "[SEP]"
    assert tok.encode("hello world") == [5, 6]  # no [CLS]/[SEP] added
    assert tok.decode([2, 5, 6, 3, 0]) == "hello world"
    picked = HFFileTokenizer(HFFileTokenizerConfig(path=str(path), eos_token="[SEP]", mask_token="[CLS]"))
    assert (picked.eos_id, picked.mask_id) == (3, 2) and picked.fingerprint() != tok.fingerprint()
    saved = tmp_path / "saved"
    saved.mkdir()
    picked.save(saved)
    path.unlink()  # a checkpoint must not depend on the original file
    again = HFFileTokenizer.load(picked.config, saved)
    assert again.fingerprint() == picked.fingerprint() and again.eos_id == 3


def test_hf_errors_are_one_line_config_errors(tmp_path: Path):
    from tokenizers import Tokenizer, models

    cases = {"no tokenizer file": str(tmp_path / "missing.json"), "needs tokenizer.path": "???"}
    nothing = Tokenizer(models.WordLevel({"a": 0, "<unk>": 1}, unk_token="<unk>"))
    nothing.save(str(tmp_path / "noeos.json"))
    cases["eos_token"] = str(tmp_path / "noeos.json")
    (tmp_path / "junk.json").write_text("{not json", encoding="utf-8")
    cases["cannot read"] = str(tmp_path / "junk.json")
    for match, path in cases.items():
        with pytest.raises(ConfigError, match=match) as info:
            HFFileTokenizer(HFFileTokenizerConfig(path=path))
        assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="not in the vocabulary"):
        HFFileTokenizer(HFFileTokenizerConfig(path=str(tmp_path / "noeos.json"), eos_token="<eos>"))


# -- sentencepiece: optional dependency ---------------------------------------------------------------
def test_sentencepiece_availability_matches_the_import():
    from plugformer_text.availability import sentencepiece_available

    ok, reason = sentencepiece_available()
    assert ok == SPM_AVAILABLE
    assert reason == ("" if ok else "sentencepiece is not installed (pip install 'plugformer[sentencepiece]')")


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory: pytest.TempPathFactory, train_spm) -> Path:
    if not SPM_AVAILABLE:
        pytest.skip("sentencepiece is not installed (pip install 'plugformer[sentencepiece]')")
    return train_spm(tmp_path_factory.mktemp("spm"), CORPUS)


def test_sentencepiece_loads_a_model_and_round_trips_its_normal_form(spm_model: Path, tmp_path: Path):
    import sentencepiece

    from plugformer_text.sentencepiece_tokenizer import SentencePieceTokenizer

    tok = SentencePieceTokenizer(SentencePieceTokenizerConfig(path=str(spm_model)))
    native = sentencepiece.SentencePieceProcessor(model_file=str(spm_model))
    assert not tok.needs_fit and tok.vocab_size == native.get_piece_size()
    assert (tok.eos_id, tok.pad_id) == (native.eos_id(), 3) and tok.mask_id == native.piece_to_id("<mask>")
    assert len({tok.eos_id, tok.pad_id, tok.mask_id}) == 3
    assert all(0 <= i < tok.vocab_size for i in (tok.eos_id, tok.pad_id, tok.mask_id))
    for text in ["hello world", "def add(a, b): return a + b", NON_ASCII]:
        assert tok.decode(tok.encode(text)) == text  # simple text is already in normal form
    for text in SAMPLES:  # the guarantee: the model's normalization of the text, byte fallback for the rest
        assert tok.decode(tok.encode(text)) == native.decode(native.encode(native.normalize(text)))
    assert tok.decode(tok.encode("ｆｕｌｌ\twidth")) == "full width"  # NFKC and whitespace: not lossless
    assert tok.decode([tok.eos_id, *tok.encode("ab"), tok.pad_id, tok.mask_id]) == "ab"
    assert not {tok.eos_id, tok.pad_id, tok.mask_id} & set(tok.encode(SAMPLES[3]))  # literal specials are text
    assert tok.encode_batch(SAMPLES) == [tok.encode(t) for t in SAMPLES]
    tok.save(tmp_path)
    again = SentencePieceTokenizer.load(tok.config, tmp_path)
    assert again.fingerprint() == tok.fingerprint() and again.encode_batch(SAMPLES) == tok.encode_batch(SAMPLES)
    assert json.dumps(again.fingerprint())  # a plain string


def test_sentencepiece_errors(spm_model: Path, tmp_path: Path):
    from plugformer_text.sentencepiece_tokenizer import SentencePieceTokenizer

    with pytest.raises(ConfigError, match="no model file"):
        SentencePieceTokenizer(SentencePieceTokenizerConfig(path=str(tmp_path / "none.model")))
    with pytest.raises(ConfigError, match="not a piece"):
        SentencePieceTokenizer(SentencePieceTokenizerConfig(path=str(spm_model), eos_token="<nope>"))
    (tmp_path / "junk.model").write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="not a SentencePiece model"):
        SentencePieceTokenizer(SentencePieceTokenizerConfig(path=str(tmp_path / "junk.model")))


def test_sentencepiece_missing_package_is_a_clear_error(monkeypatch, tmp_path: Path):
    from plugformer_text import availability, sentencepiece_tokenizer

    monkeypatch.setattr(sentencepiece_tokenizer, "sentencepiece_available",
                        lambda: (False, availability.SENTENCEPIECE_MISSING))
    (tmp_path / "any.model").write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"pip install 'plugformer\[sentencepiece\]'"):
        sentencepiece_tokenizer.SentencePieceTokenizer(SentencePieceTokenizerConfig(path=str(tmp_path / "any.model")))


# -- plugformer tokenizer train (in-process) ----------------------------------------------------------
@pytest.fixture
def tokenizer_cli(monkeypatch, tmp_path: Path):
    """``plugformer.cli.tokenizer_command.run`` with a private cache, in ``tmp_path``."""
    from plugformer.cli import tokenizer_command

    monkeypatch.setenv("PLUGFORMER_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return tokenizer_command.run


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("".join(CORPUS), encoding="utf-8")
    return path


@pytest.mark.parametrize("kind,vocab", [("bpe", 300), ("wordpiece", 200), ("unigram", 320)])
def test_cli_trains_saves_and_hf_reloads(tokenizer_cli, corpus_file: Path, tmp_path: Path, capsys, kind, vocab):
    out = tmp_path / "out" / kind
    code = tokenizer_cli(["train", f"tokenizer={kind}", f"tokenizer.vocab_size={vocab}", "data=text",
                          f"data.path={corpus_file}", "data.val_fraction=0.1", f"out={out}"])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith(f"tokenizer {kind}: vocab_size ") and "tokenizer.json" in lines[0]
    assert "round trip" in lines[1] and ("NOT exact" in lines[1]) == (kind == "wordpiece")
    assert {p.name for p in out.iterdir()} == {"tokenizer.json", "plugformer_tokenizer.yaml"}
    assert f"name: {kind}" in (out / "plugformer_tokenizer.yaml").read_text()
    hf = HFFileTokenizer(HFFileTokenizerConfig(path=str(out)))
    assert hf.vocab_size <= vocab and (hf.eos_id, hf.pad_id, hf.mask_id) != (None, None, None)
    assert hf.pad_id is not None and hf.mask_id is not None


def test_cli_copies_a_pretrained_tokenizer(tokenizer_cli, trained, corpus_file: Path, tmp_path: Path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    trained["bpe"].save(src)
    out = tmp_path / "copy"
    assert tokenizer_cli(["train", "tokenizer=hf", f"tokenizer.path={src}", "data=text",
                          f"data.path={corpus_file}", f"out={out}"]) == 0
    assert "exact" in capsys.readouterr().out
    assert (out / "tokenizer.json").read_text() == (src / "tokenizer.json").read_text()


def test_cli_errors_are_plugformer_errors(tokenizer_cli, tmp_path: Path):
    with pytest.raises(PlugformerError, match="unknown tokenizer sub-command 'trian'.*train"):
        tokenizer_cli(["trian", "out=x"])
    with pytest.raises(PlugformerError, match="out=DIR"):
        tokenizer_cli(["train", "tokenizer=bpe"])
    with pytest.raises(PlugformerError, match="wordpeice"):
        tokenizer_cli(["train", "tokenizer=wordpeice", f"out={tmp_path / 'o'}"])
    with pytest.raises(PlugformerError, match="tokenizer.path"):
        tokenizer_cli(["train", "tokenizer=hf", f"out={tmp_path / 'o'}"])
    assert not (tmp_path / "o").exists()
