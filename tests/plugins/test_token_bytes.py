"""Each first-party tokenizer says which bytes every token spells (``Tokenizer.token_bytes``), so structured
output can mask tokens by the text they add: the bytes of the ids ``encode`` gives, concatenated, are the
text's own UTF-8 bytes wherever the tokenizer keeps text as it is."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from plugformer import PlugformerError
from plugformer.interfaces import Vocabulary
from plugformer_text.bpe_tokenizer import BPETokenizer
from plugformer_text.byte_tokenizer import ByteTokenizer
from plugformer_text.hf_file_tokenizer import HFFileTokenizer
from plugformer_text.schemas import (
    BPETokenizerConfig, HFFileTokenizerConfig, SentencePieceTokenizerConfig, UnigramTokenizerConfig,
    WordPieceTokenizerConfig,
)
from plugformer_text.token_bytes import byte_level_table
from plugformer_text.unigram_tokenizer import UnigramTokenizer
from plugformer_text.wordpiece_tokenizer import WordPieceTokenizer

CORPUS = [
    "def add(a, b):\n    return a + b\n",
    'Le café est naïf; 数学 is maths. 🚀 {"key": [1, 2.5, null]}\n',
    "naïve readers fit the vocabulary; if x: pass\n",
] * 20
TEXTS = ["hello world", "  two  spaces\tand a tab\n", "naïve café 数学 🚀", '{"a": [1, 2]}', "unseen: ʤ 𝔘 ﷺ",
         "<|endoftext|> <pad> <0x41> literally", ""]
SPM_AVAILABLE = importlib.util.find_spec("sentencepiece") is not None


def spelled(tok, text: str) -> bytes:
    table = tok.token_bytes()
    return b"".join(table[i] for i in tok.encode(text))


@pytest.fixture(scope="module")
def trained() -> dict[str, object]:
    bpe = BPETokenizer(BPETokenizerConfig(vocab_size=320))
    unigram = UnigramTokenizer(UnigramTokenizerConfig(vocab_size=340))
    for tok in (bpe, unigram):
        tok.fit(CORPUS)
    return {"bpe": bpe, "unigram": unigram, "byte": ByteTokenizer(None)}


@pytest.mark.parametrize("kind", ["byte", "bpe", "unigram"])
def test_encoded_tokens_spell_the_text(trained, kind):
    tok = trained[kind]
    assert len(tok.token_bytes()) == tok.vocab_size
    for text in TEXTS:
        assert spelled(tok, text) == text.encode("utf-8"), text


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_hf_file_tokenizers_spell_what_they_load(trained, kind, tmp_path: Path):
    trained[kind].save(tmp_path)
    tok = HFFileTokenizer(HFFileTokenizerConfig(path=str(tmp_path)))
    assert tok.token_bytes() == trained[kind].token_bytes()
    for text in TEXTS:
        assert spelled(tok, text) == text.encode("utf-8"), text


def test_special_tokens_are_listed_and_spelled_by_name(trained):
    bpe, unigram, byte = trained["bpe"], trained["unigram"], trained["byte"]
    assert bpe.special_token_ids() == {0, 1, 2}
    assert [bpe.token_bytes()[i] for i in (0, 1, 2)] == [b"<|endoftext|>", b"<pad>", b"<mask>"]
    assert unigram.hf.id_to_token(0) == "<unk>" and 0 in unigram.special_token_ids()  # never spells text
    assert {unigram.eos_id, unigram.pad_id, unigram.mask_id} <= unigram.special_token_ids()
    assert byte.special_token_ids() == {256, 257, 258} and byte.token_bytes()[256:] == [b"<eos>", b"<pad>", b"<mask>"]


def test_unigram_byte_pieces_are_single_bytes_and_metaspace_is_a_space(trained):
    tok = trained["unigram"]
    table = tok.token_bytes()
    for b in (0x00, 0x41, 0xE2, 0xFF):
        assert table[tok.hf.token_to_id(f"<0x{b:02X}>")] == bytes([b])
    spaced = [p for p in tok.hf.get_vocab() if p.startswith("▁") and len(p) > 1]
    assert spaced and all(table[tok.hf.token_to_id(p)] == p.replace("▁", " ").encode() for p in spaced)


def test_the_byte_level_alphabet_covers_every_byte_once():
    table = byte_level_table()
    assert sorted(table.values()) == list(range(256)) and len(table) == 256
    assert table["Ġ"] == ord(" ") and table["Ċ"] == ord("\n") and table["a"] == ord("a")


def test_wordpiece_cannot_spell_its_tokens():
    tok = WordPieceTokenizer(WordPieceTokenizerConfig(vocab_size=200))
    tok.fit(CORPUS)
    with pytest.raises(PlugformerError, match="tokenizer 'wordpiece' does not expose its token bytes, so structured "
                                              "output is unavailable: its WordPiece decoder") as info:
        tok.token_bytes()
    assert "\n" not in str(info.value)
    with pytest.raises(PlugformerError, match="does not expose its token bytes"):
        Vocabulary.of(tok)


def test_a_pipeline_without_a_decoder_is_refused(trained, tmp_path: Path):
    from tokenizers import Tokenizer as HFTokenizer

    raw = HFTokenizer.from_str(trained["bpe"].hf.to_str())
    raw.decoder = None
    raw.save(str(tmp_path / "tokenizer.json"))
    tok = HFFileTokenizer(HFFileTokenizerConfig(path=str(tmp_path)))
    with pytest.raises(PlugformerError, match="it has no decoder"):
        tok.token_bytes()


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory: pytest.TempPathFactory, train_spm) -> Path:
    if not SPM_AVAILABLE:
        pytest.skip("sentencepiece is not installed (pip install 'plugformer[sentencepiece]')")
    return train_spm(tmp_path_factory.mktemp("spm"), CORPUS)


def test_sentencepiece_tokens_spell_the_normalized_text_with_its_dummy_prefix(spm_model: Path):
    from plugformer_text.sentencepiece_tokenizer import SentencePieceTokenizer

    tok = SentencePieceTokenizer(SentencePieceTokenizerConfig(path=str(spm_model)))
    assert len(tok.token_bytes()) == tok.vocab_size
    assert {tok.eos_id, tok.pad_id, tok.mask_id, tok._sp.unk_id(), tok._sp.bos_id()} <= tok.special_token_ids()
    for text in ["hello world", "def add(a, b): return a + b", "naïve café 数学 🚀 ʤ"]:
        assert tok.decode(tok.encode(text)) == text  # already in the model's normal form
        assert spelled(tok, text) == b" " + text.encode("utf-8")  # the dummy prefix decoding drops


def llama_style(trained, tmp_path: Path, strip_first: bool) -> HFFileTokenizer:
    """The trained unigram rewired the way Llama-family ``tokenizer.json`` files are: a space prepended to the
    text, and a decoder that turns ``▁`` into spaces, joins byte pieces and strips the prepended space."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, pre_tokenizers

    raw = HFTokenizer.from_str(trained["unigram"].hf.to_str())
    raw.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    strip = decoders.Strip(content=" ", left=1, right=0)
    tail = [strip, decoders.Fuse()] if strip_first else [decoders.Fuse(), strip]
    raw.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), *tail])
    raw.save(str(tmp_path / "tokenizer.json"))
    return HFFileTokenizer(HFFileTokenizerConfig(path=str(tmp_path)))


def test_llama_style_files_spell_the_text_with_its_prepended_space(trained, tmp_path: Path):
    tok = llama_style(trained, tmp_path, strip_first=False)
    for text in ["hello world", "naïve café 数学 🚀", '{"a": [1, 2]}']:
        assert tok.decode(tok.encode(text)) == text
        assert spelled(tok, text) == b" " + text.encode("utf-8")  # the space decoding strips once


def test_a_strip_before_the_fuse_would_cut_every_token_and_is_refused(trained, tmp_path: Path):
    with pytest.raises(PlugformerError, match="its Strip decoder removes characters from every token"):
        llama_style(trained, tmp_path, strip_first=True).token_bytes()
