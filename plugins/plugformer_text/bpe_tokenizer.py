"""Byte-level BPE (GPT-2 style) trained with the HF ``tokenizers`` library."""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from plugformer.errors import ConfigError
from plugformer.interfaces import Tokenizer

FILENAME = "tokenizer.json"
EOS = "<|endoftext|>"
MIN_VOCAB = 257  # the 256 byte symbols plus <|endoftext|>
UNTRAINED = "the bpe tokenizer is not trained yet: call fit(texts) or load(config, directory)"


class BPETokenizer(Tokenizer):
    """Byte-level BPE: text → UTF-8 bytes → learned merges, so any text round-trips exactly.

    Untrained until :meth:`fit` (or :meth:`load`). ``<|endoftext|>`` is the only special token; text
    that happens to contain that string is encoded as ordinary bytes, never as the eos id.
    """

    def __init__(self, config: Any):
        super().__init__(config)
        self._tok: HFTokenizer | None = None
        self._fingerprint = ""

    # -- construction ------------------------------------------------------------------------------
    @staticmethod
    def _blank() -> HFTokenizer:
        """An empty BPE model wired with the byte-level pre-tokenizer and decoder (no added spaces)."""
        tok = HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        return tok

    def _adopt(self, tok: HFTokenizer) -> None:
        """Use ``tok`` after checking it has the eos token; literal specials in text stay plain text."""
        if tok.token_to_id(EOS) is None:
            raise ValueError(f"BPE tokenizer has no {EOS} token")
        tok.encode_special_tokens = True
        self._tok = tok
        self._fingerprint = "bpe-" + hashlib.sha256(tok.to_str().encode("utf-8")).hexdigest()[:16]

    @property
    def _hf(self) -> HFTokenizer:
        if self._tok is None:
            raise RuntimeError(UNTRAINED)
        return self._tok

    # -- Tokenizer contract ------------------------------------------------------------------------
    @property
    def needs_fit(self) -> bool:
        return self._tok is None

    def fit(self, texts: Iterable[str]) -> None:
        """Learn merges from ``texts`` (streamed; the library counts words in parallel)."""
        vocab_size, min_frequency = int(self.config.vocab_size), int(self.config.min_frequency)
        if vocab_size < MIN_VOCAB:
            raise ConfigError(f"tokenizer.vocab_size must be at least {MIN_VOCAB} for byte-level BPE, "
                              f"got {vocab_size}")
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[EOS],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        tok = self._blank()
        tok.train_from_iterator(iter(texts), trainer=trainer)
        self._adopt(tok)

    @property
    def vocab_size(self) -> int:
        return self._hf.get_vocab_size(with_added_tokens=True)

    @property
    def eos_id(self) -> int:
        return self._hf.token_to_id(EOS)

    def encode(self, text: str) -> list[int]:
        return self._hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._hf.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self._hf.decode([int(i) for i in ids], skip_special_tokens=True)

    def save(self, directory: Path) -> None:
        self._hf.save(str(Path(directory) / FILENAME))

    @classmethod
    def load(cls, config: Any, directory: Path) -> BPETokenizer:
        tokenizer = cls(config)
        tokenizer._adopt(HFTokenizer.from_file(str(Path(directory) / FILENAME)))
        return tokenizer

    def fingerprint(self) -> str:
        """Hash of the serialized tokenizer: equal exactly when vocab, merges and pipeline are equal."""
        if not self._fingerprint:
            raise RuntimeError(UNTRAINED)
        return self._fingerprint
