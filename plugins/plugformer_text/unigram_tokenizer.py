"""SentencePiece-style Unigram trained with the HF ``tokenizers`` library, with byte fallback."""
from __future__ import annotations

import json
import re
from collections.abc import Iterable

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from plugformer import ConfigError
from plugformer_text.hf_base import HFBackedTokenizer
from plugformer_text.specials import SPECIALS, UNK

SPACE = "▁"  # U+2581: how Metaspace writes a space inside pieces
BYTE_PIECES = [f"<0x{b:02X}>" for b in range(256)]
_BYTE_PIECE = re.compile(r"<0x[0-9A-F]{2}>")
SCORE_DIGITS = 6  # piece log-probabilities are kept to this many decimals
BYTE_SCORE = -1e6  # byte pieces are only for characters with no piece: Viterbi must never prefer them
#: every character of "<0xHH>" gets a piece, so literal text such as "<0x41>" is spelled with
#: ordinary pieces (far likelier than a byte piece) and never decodes as the byte it names
SYNTAX_CHARS = sorted(set("<>x0123456789ABCDEF"))
MIN_VOCAB = len(BYTE_PIECES) + len(SPECIALS) + 1 + len(SYNTAX_CHARS)  # + <unk> + the syntax characters


class UnigramTokenizer(HFBackedTokenizer):
    """Unigram language-model pieces over Metaspace words (spaces become ``▁``), like SentencePiece.

    No normalizer, and any character without a piece falls back to its UTF-8 bytes (``<0x..>``
    pieces), so tabs, newlines, emoji and unseen scripts all round-trip. The one exception is the
    character U+2581 itself, which decodes as a space: hence the tokenizer is declared *not*
    lossless, and ``decode(encode(text)) == text`` holds for every text without U+2581.

    ``vocab_size`` bounds everything: ``<unk>`` (required by the library, never produced), learned
    pieces, the 256 byte pieces and the special tokens
    (which come last, as added tokens, so the model itself can never produce them).
    """

    kind = "unigram"

    @staticmethod
    def _wire(tok: HFTokenizer) -> HFTokenizer:
        """Metaspace pre-tokenizer and decoder without a prepended space, so leading spaces survive."""
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="never")
        tok.decoder = decoders.Sequence([
            decoders.ByteFallback(), decoders.Metaspace(replacement=SPACE, prepend_scheme="never")])
        return tok

    def fit(self, texts: Iterable[str]) -> None:
        """Train pieces on ``texts``, then rebuild the model with byte fallback and the special tokens."""
        vocab_size = int(self.config.vocab_size)
        if vocab_size < MIN_VOCAB:
            raise ConfigError(f"tokenizer.vocab_size must be at least {MIN_VOCAB} for unigram (256 byte pieces, "
                              f"{len(SPECIALS)} special tokens, <unk>, {len(SYNTAX_CHARS)} fixed pieces), "
                              f"got {vocab_size}")
        budget = vocab_size - len(BYTE_PIECES) - len(SPECIALS) - 1  # learned pieces we can keep
        trainer = trainers.UnigramTrainer(
            vocab_size=budget + 1, unk_token=UNK, special_tokens=[UNK],
            max_piece_length=int(self.config.max_piece_length), show_progress=False)
        draft = self._wire(HFTokenizer(models.Unigram()))
        draft.train_from_iterator(iter(texts), trainer=trainer)
        learned = json.loads(draft.to_str())["model"]["vocab"]
        # scores rounded and ties ordered by text: the trainer's float sums vary in the last bits from
        # run to run, and the same corpus should give the same ids (and fingerprint) every time
        pieces = [(p, round(s, SCORE_DIGITS)) for p, s in learned
                  if p != UNK and p not in SPECIALS and not _BYTE_PIECE.fullmatch(p)]
        floor = min((s for _, s in pieces), default=0.0) - 1.0
        fixed = [(c, dict(pieces).get(c, floor)) for c in SYNTAX_CHARS]
        # byte fallback makes every other piece optional, so the budget can cut the least likely ones
        rest = sorted((ps for ps in pieces if ps[0] not in SYNTAX_CHARS), key=lambda ps: (-ps[1], ps[0]))
        pieces = sorted(fixed + rest[:budget - len(fixed)], key=lambda ps: (-ps[1], ps[0]))
        # the library needs an <unk> piece even with byte fallback; its score keeps Viterbi off it
        vocab = [(UNK, BYTE_SCORE), *pieces, *((b, BYTE_SCORE) for b in BYTE_PIECES)]
        tok = self._wire(HFTokenizer(models.Unigram(vocab, unk_id=0, byte_fallback=True)))
        tok.add_special_tokens(list(SPECIALS))
        self._adopt(tok)
