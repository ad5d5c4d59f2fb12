"""Tokenizer contract, on a tokenizer built from schema defaults and (if it needs it) fitted on the
kit's multilingual + code sample: ids within the vocabulary and free of special tokens, batch encoding
equal to one-by-one, exact round trips where ``lossless`` is declared, token bytes (where a tokenizer
exposes them) that spell the encoded text, save/load that restores the same mapping from plain files, and
a fingerprint that is stable and changes with the mapping."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from plugformer.errors import PlugformerError
from plugformer.interfaces import Tokenizer
from plugformer.registry import Entry
from plugformer.testing.construct import build, config_for, fitted_tokenizer, label
from plugformer.testing.samples import SAMPLES

contract = pytest.mark.plugformer_contract


def specials(tok: Tokenizer) -> dict[str, Any]:
    return {"eos_id": tok.eos_id, "pad_id": tok.pad_id, "mask_id": tok.mask_id}


@contract("tokenizer")
def test_fitting_makes_it_usable(entry: Entry) -> None:
    tok = build(entry)
    assert isinstance(tok, Tokenizer), f"{label(entry)}: builds a {type(tok).__name__}, not a Tokenizer"
    if tok.needs_fit:
        tok.fit(list(SAMPLES) * 8)
    assert not tok.needs_fit, f"{label(entry)}: still needs_fit after fit()"
    assert tok.vocab_size > 0, f"{label(entry)}: vocab_size {tok.vocab_size}"


@contract("tokenizer")
def test_ids_are_in_the_vocabulary_and_free_of_specials(entry: Entry) -> None:
    tok, what = fitted_tokenizer(entry), label(entry)
    special = {k: v for k, v in specials(tok).items() if v is not None}
    for key, value in special.items():
        assert isinstance(value, int) and 0 <= value < tok.vocab_size, f"{what}: {key}={value!r} outside the vocabulary"
    if tok.mask_id is not None:
        assert tok.mask_id != tok.eos_id, f"{what}: mask_id equals eos_id"
    assert tok.encode("") == [], f"{what}: encode('') is {tok.encode('')}"
    for text in SAMPLES:
        ids = tok.encode(text)
        assert ids and all(isinstance(i, int) and 0 <= i < tok.vocab_size for i in ids), \
            f"{what}: ids for {text[:30]!r} outside 0..{tok.vocab_size - 1}: {ids[:20]}"
        leaked = {k for k, v in special.items() if v in ids}
        assert not leaked, f"{what}: encode({text[:30]!r}) emits special tokens {sorted(leaked)}"
        assert isinstance(tok.decode(ids), str), f"{what}: decode does not return str"


@contract("tokenizer")
def test_encode_batch_equals_encode(entry: Entry) -> None:
    tok = fitted_tokenizer(entry)
    assert tok.encode_batch(list(SAMPLES)) == [tok.encode(t) for t in SAMPLES], \
        f"{label(entry)}: encode_batch differs from encode"


@contract("tokenizer", needs=("lossless",))
def test_lossless_round_trip(entry: Entry) -> None:
    tok = fitted_tokenizer(entry)
    for text in (*SAMPLES, "", " ", "\n", "<|endoftext|> <pad> <mask> [CLS] </s>"):
        back = tok.decode(tok.encode(text))
        assert back == text, f"{label(entry)}: declares lossless but {text!r} comes back as {back!r}"


@contract("tokenizer")
def test_token_bytes_spell_the_encoded_text(entry: Entry) -> None:
    tok, what = fitted_tokenizer(entry), label(entry)
    try:
        table = tok.token_bytes()
    except PlugformerError as exc:  # optional: structured output is then unavailable with this tokenizer
        pytest.skip(f"{what}: {exc}")
    assert len(table) == tok.vocab_size and all(isinstance(b, bytes) for b in table), \
        f"{what}: token_bytes() must give one bytes object per id ({tok.vocab_size}), got {len(table)} entries"
    special = {v for v in specials(tok).values() if v is not None}
    assert special <= set(tok.special_token_ids()), f"{what}: special_token_ids() lacks some of {sorted(special)}"
    if entry.capabilities.get("lossless"):
        for text in SAMPLES:
            spelled = b"".join(table[i] for i in tok.encode(text))
            assert spelled == text.encode("utf-8"), \
                f"{what}: declares lossless but the token bytes of {text[:30]!r} spell {spelled[:60]!r}"


@contract("tokenizer")
def test_save_and_load_restore_the_same_mapping(entry: Entry, tmp_path: Path) -> None:
    tok, what = fitted_tokenizer(entry), label(entry)
    tok.save(tmp_path)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files, f"{what}: save() wrote nothing"
    for path in files:
        head = path.read_bytes()[:2]
        assert not (len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5), \
            f"{what}: {path.name} is a pickle; tokenizers save plain files"
    loaded = type(tok).load(config_for(entry), tmp_path)
    assert not loaded.needs_fit, f"{what}: needs_fit after load()"
    assert loaded.vocab_size == tok.vocab_size, f"{what}: vocab_size {tok.vocab_size} → {loaded.vocab_size}"
    assert specials(loaded) == specials(tok), f"{what}: special ids {specials(tok)} → {specials(loaded)}"
    assert loaded.fingerprint() == tok.fingerprint(), f"{what}: the fingerprint changes through save/load"
    for text in SAMPLES:
        ids = tok.encode(text)
        assert loaded.encode(text) == ids, f"{what}: {text[:30]!r} encodes differently after load"
        assert loaded.decode(ids) == tok.decode(ids), f"{what}: decode differs after load"


@contract("tokenizer")
def test_fingerprint_is_stable_and_follows_the_mapping(entry: Entry) -> None:
    tok, what = fitted_tokenizer(entry), label(entry)
    fp = tok.fingerprint()
    assert isinstance(fp, str) and fp, f"{what}: fingerprint {fp!r}"
    assert tok.fingerprint() == fp, f"{what}: fingerprint changes between calls"
    if not build(entry).needs_fit:
        return
    other = build(entry)
    other.fit([SAMPLES[0], SAMPLES[6]] * 4)
    differs = any(other.encode(t) != tok.encode(t) for t in SAMPLES) or other.vocab_size != tok.vocab_size
    if differs:
        assert other.fingerprint() != fp, f"{what}: fitted on other text, ids change but the fingerprint does not"
