"""The bytes each token of an HF ``tokenizers`` pipeline spells, read from its decoder: what structured
output needs to mask tokens by the text they add.

Two pipelines spell every token as fixed bytes:

- byte-level (GPT-2 style, the ``bpe`` tokenizer): a ``ByteLevel`` decoder; each character of a token stands
  for one byte through the byte-to-printable-character table the library's pre-tokenizer uses;
- SentencePiece style (the ``unigram`` tokenizer, Llama-like ``tokenizer.json`` files): ``Metaspace``,
  ``ByteFallback``, ``Replace("▁", " ")``, ``Fuse`` and ``Strip`` decoders; ``▁`` is a space and a byte piece
  ``<0xNN>`` is the byte ``NN``. A ``Strip`` after a ``Fuse`` (dropping the space a ``Metaspace``
  pre-tokenizer prepends) and a ``Metaspace`` decoder's own prepend scheme act once on the whole text, not
  per token, so token bytes keep that leading space (a guided text's first space is then dropped on decode).

Other decoders (``WordPiece``, which joins words with spaces it never stored, ``BPEDecoder``, ``CTC``, none
at all) do not, and such a tokenizer cannot be guided: :func:`speller` says so in one line.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from tokenizers import Tokenizer as HFTokenizer

from plugformer import PlugformerError

SPACE = "▁"  # U+2581: how Metaspace writes a space inside pieces
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
#: decoders of a SentencePiece-style pipeline (a Replace is accepted only for "▁" → " ")
_SENTENCEPIECE_DECODERS = {"Metaspace", "ByteFallback", "Replace", "Fuse", "Strip"}
#: printable bytes a byte-level BPE writes as the character of the same code point; the other 68 bytes are
#: written as the characters from U+0100 upwards, in byte order
_PRINTABLE = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]


def byte_level_table() -> dict[str, int]:
    """Character → byte of the byte-level alphabet (the inverse of the table the byte-level pre-tokenizer
    writes bytes with)."""
    printable = set(_PRINTABLE)
    table = {chr(b): b for b in _PRINTABLE}
    shifted = 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + shifted)] = b
            shifted += 1
    return table


def _decoder_types(decoder: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The decoder and, for a ``Sequence``, each of its parts (flattened)."""
    if decoder is None:
        return []
    if decoder.get("type") == "Sequence":
        return [part for d in decoder.get("decoders", []) for part in _decoder_types(d)]
    return [decoder]


def _refuse(kind: str, why: str) -> PlugformerError:
    return PlugformerError(f"tokenizer {kind} does not expose its token bytes, so structured output is "
                           f"unavailable: {why}")


def speller(tok: HFTokenizer, kind: str) -> Callable[[str], bytes]:
    """A function from a (non-added) token's text to the bytes it decodes to, for ``tok``'s decoder; a
    :class:`~plugformer.errors.PlugformerError` naming ``kind`` when the decoder does not spell tokens as
    fixed bytes."""
    parts = _decoder_types(json.loads(tok.to_str()).get("decoder"))
    types = [p.get("type") for p in parts]
    if not parts:
        raise _refuse(kind, "it has no decoder, so decoding joins tokens with spaces")
    if types == ["ByteLevel"]:
        table = byte_level_table()

        def byte_level(text: str) -> bytes:
            try:
                return bytes(table[c] for c in text)
            except KeyError as exc:
                raise _refuse(kind, f"token {text!r} has character {exc.args[0]!r} outside the byte-level "
                                    "alphabet") from None
        return byte_level
    if set(types) <= _SENTENCEPIECE_DECODERS:
        for i, part in enumerate(parts):
            if part["type"] == "Replace" and (part.get("pattern", {}).get("String"), part.get("content")) != \
                    (SPACE, " "):
                raise _refuse(kind, f"its Replace decoder rewrites {part.get('pattern')} as {part.get('content')!r}")
            # after a Fuse, a Strip of leading spaces acts once on the whole text; before one, on every token
            if part["type"] == "Strip" and ((part.get("content"), int(part.get("stop", 0))) != (" ", 0)
                                            or "Fuse" not in types[:i]):
                raise _refuse(kind, "its Strip decoder removes characters from every token")
        fallback = "ByteFallback" in types

        def sentencepiece(text: str) -> bytes:
            match = _BYTE_PIECE.fullmatch(text) if fallback else None
            if match:
                return bytes([int(match.group(1), 16)])
            return text.replace(SPACE, " ").encode("utf-8")
        return sentencepiece
    other = ", ".join(sorted(set(types) - _SENTENCEPIECE_DECODERS - {"ByteLevel"})) or "+".join(types)
    raise _refuse(kind, f"its {other} decoder does not spell each token as fixed bytes")


def unknown_token_id(tok: HFTokenizer) -> int | None:
    """The model's unknown-token id (``<unk>``), if it has one: it spells no text."""
    model = json.loads(tok.to_str()).get("model", {})
    if model.get("unk_id") is not None:
        return int(model["unk_id"])
    name = model.get("unk_token")
    return tok.token_to_id(name) if name else None


def token_bytes(tok: HFTokenizer, kind: str) -> list[bytes]:
    """The bytes of every id of ``tok`` (``get_vocab_size(with_added_tokens=True)`` entries): added tokens
    give their content as UTF-8, the others their decoder's spelling. Ids no token claims give ``b""``."""
    spell = speller(tok, kind)
    added = tok.get_added_tokens_decoder()
    out = [b""] * tok.get_vocab_size(with_added_tokens=True)
    for text, i in tok.get_vocab(with_added_tokens=True).items():
        if 0 <= i < len(out):
            out[i] = added[i].content.encode("utf-8") if i in added else spell(text)
    return out


def special_ids(tok: HFTokenizer) -> set[int]:
    """Ids that spell no text: special added tokens, the unknown token, and ids no token claims."""
    size = tok.get_vocab_size(with_added_tokens=True)
    out = {i for i, t in tok.get_added_tokens_decoder().items() if t.special}
    unk = unknown_token_id(tok)
    if unk is not None:
        out.add(unk)
    claimed = set(tok.get_vocab(with_added_tokens=True).values())
    return out | (set(range(size)) - claimed)
