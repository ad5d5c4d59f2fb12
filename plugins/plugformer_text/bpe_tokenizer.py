"""Byte-level BPE (GPT-2 style) trained with the HF ``tokenizers`` library."""
from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from plugformer import ConfigError
from plugformer_text.hf_base import FILENAME, HFBackedTokenizer
from plugformer_text.specials import EOS, SPECIALS

__all__ = ["EOS", "FILENAME", "MIN_VOCAB", "BPETokenizer"]

MIN_VOCAB = 256 + len(SPECIALS)  # the 256 byte symbols plus <|endoftext|>, <pad>, <mask>


class BPETokenizer(HFBackedTokenizer):
    """Byte-level BPE: text → UTF-8 bytes → learned merges, so any text round-trips exactly.

    Untrained until :meth:`fit` (or :meth:`load`). Reserves ``<|endoftext|>``, ``<pad>`` and ``<mask>``
    (ids 0, 1, 2); text that happens to contain those strings is encoded as ordinary bytes. Files saved
    before ``<pad>``/``<mask>`` existed still load, with ``pad_id``/``mask_id`` None.
    """

    kind = "bpe"

    @staticmethod
    def _blank() -> HFTokenizer:
        """An empty BPE model wired with the byte-level pre-tokenizer and decoder (no added spaces)."""
        tok = HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        return tok

    def fit(self, texts: Iterable[str]) -> None:
        """Learn merges from ``texts`` (streamed; the library counts words in parallel)."""
        vocab_size, min_frequency = int(self.config.vocab_size), int(self.config.min_frequency)
        if vocab_size < MIN_VOCAB:
            raise ConfigError(f"tokenizer.vocab_size must be at least {MIN_VOCAB} for byte-level BPE "
                              f"(256 bytes + {len(SPECIALS)} special tokens), got {vocab_size}")
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIALS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        tok = self._blank()
        tok.train_from_iterator(iter(texts), trainer=trainer)
        self._adopt(tok)

