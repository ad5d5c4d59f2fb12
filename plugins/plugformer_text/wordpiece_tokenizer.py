"""BERT-style WordPiece trained with the HF ``tokenizers`` library (lossy: whitespace is not kept)."""
from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

from plugformer import ConfigError
from plugformer_text.hf_base import HFBackedTokenizer
from plugformer_text.specials import SPECIALS, UNK

PREFIX = "##"  # marks a piece that continues the previous one inside a word
MIN_VOCAB = len(SPECIALS) + 2  # the specials, <unk> and at least one learned symbol


class WordPieceTokenizer(HFBackedTokenizer):
    """WordPiece over BERT's pre-tokenization: words and single punctuation marks, whitespace dropped.

    The normalizer removes control characters and (with ``lowercase``) case; CJK ideographs become
    words of their own; accents are kept. Decoding joins words with one space, so
    ``decode(encode(text))`` is the normalized words of ``text`` separated by single spaces (exact only
    for text already in that form). A word with a character never seen in training becomes ``<unk>``
    (kept visible on decode). Suited to encoders (MLM), not to generating code.
    """

    kind = "wordpiece"

    def _blank(self) -> HFTokenizer:
        """An empty WordPiece model wired with BERT's normalizer and pre-tokenizer."""
        tok = HFTokenizer(models.WordPiece(unk_token=UNK, continuing_subword_prefix=PREFIX))
        tok.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=bool(self.config.lowercase))
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix=PREFIX, cleanup=False)  # cleanup would glue punctuation
        return tok

    def fit(self, texts: Iterable[str]) -> None:
        """Learn the vocabulary from ``texts`` (all characters seen become symbols)."""
        vocab_size, min_frequency = int(self.config.vocab_size), int(self.config.min_frequency)
        if vocab_size < MIN_VOCAB:
            raise ConfigError(f"tokenizer.vocab_size must be at least {MIN_VOCAB} for wordpiece, got {vocab_size}")
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[*SPECIALS, UNK],
            continuing_subword_prefix=PREFIX, show_progress=False)
        tok = self._blank()
        tok.train_from_iterator(iter(texts), trainer=trainer)
        self._adopt(tok)

    @property
    def unk_id(self) -> int:
        """The id a word with an unseen character becomes."""
        return int(self.hf.token_to_id(UNK))

    def normalized(self, text: str) -> str:
        """What ``decode(encode(text))`` gives when every character of ``text`` was seen in training."""
        words = self.hf.pre_tokenizer.pre_tokenize_str(self.hf.normalizer.normalize_str(text))
        return " ".join(w for w, _ in words)
