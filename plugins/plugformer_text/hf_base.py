"""The part every tokenizer backed by an HF ``tokenizers.Tokenizer`` shares: ids, files, fingerprint."""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as HFTokenizer

from plugformer.interfaces import Tokenizer
from plugformer_text import token_bytes as spelling
from plugformer_text.specials import EOS, MASK, PAD

FILENAME = "tokenizer.json"


class HFBackedTokenizer(Tokenizer):
    """Wraps a ``tokenizers.Tokenizer``; subclasses say how one is trained or found.

    The wrapped tokenizer is saved as a single ``tokenizer.json``, so any HF-compatible tool (and the
    ``hf`` plugin) can read what a subclass trained. Special tokens in the *input text* are always
    encoded as ordinary text, never as control ids: a document that quotes ``<|endoftext|>`` must not
    end early.
    """

    kind = "hf"  #: fingerprint prefix and name in error messages
    skip_special_on_decode = False  #: drop every special token on decode, not only eos/pad/mask

    def __init__(self, config: Any):
        super().__init__(config)
        self._tok: HFTokenizer | None = None
        self._ids: dict[str, int | None] = {}
        self._fingerprint = ""

    # -- what subclasses decide --------------------------------------------------------------------
    def _role_tokens(self, tok: HFTokenizer) -> dict[str, str | None]:
        """The token text of each role (``eos``, ``pad``, ``mask``) in ``tok``; None: no such token."""
        return {"eos": EOS, "pad": PAD, "mask": MASK}

    def _untrained_message(self) -> str:
        return f"the {self.kind} tokenizer is not trained yet: call fit(texts) or load(config, directory)"

    # -- shared machinery --------------------------------------------------------------------------
    def _adopt(self, tok: HFTokenizer) -> None:
        """Use ``tok``: resolve the role ids (eos is required; pad/mask may be absent in older files).

        ``tok`` is first passed through its own serialization: the library does not write every float
        score back bit-exactly, and a fitted tokenizer must behave (and fingerprint) exactly like the
        one :meth:`load` will read from its file.
        """
        tok = HFTokenizer.from_str(tok.to_str())
        roles = self._role_tokens(tok)
        ids = {role: (tok.token_to_id(name) if name is not None else None) for role, name in roles.items()}
        if ids.get("eos") is None:
            raise ValueError(f"{self.kind} tokenizer has no end-of-document token {roles.get('eos') or EOS!r}")
        tok.encode_special_tokens = True
        self._tok, self._ids = tok, ids
        text = tok.to_str() + "|" + ",".join(f"{k}={v}" for k, v in sorted(ids.items()))
        self._fingerprint = f"{self.kind}-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    @property
    def hf(self) -> HFTokenizer:
        """The wrapped ``tokenizers.Tokenizer`` (raises while untrained)."""
        if self._tok is None:
            raise RuntimeError(self._untrained_message())
        return self._tok

    @property
    def needs_fit(self) -> bool:
        return self._tok is None

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size(with_added_tokens=True)

    @property
    def eos_id(self) -> int:
        self.hf  # noqa: B018 - raise the untrained error rather than a KeyError
        return int(self._ids["eos"])  # type: ignore[arg-type]

    @property
    def pad_id(self) -> int | None:
        self.hf  # noqa: B018
        return self._ids.get("pad")

    @property
    def mask_id(self) -> int | None:
        self.hf  # noqa: B018
        return self._ids.get("mask")

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.hf.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        """Text for ``ids`` without eos/pad/mask (and without any special token if the class says so)."""
        control = {i for i in self._ids.values() if i is not None}
        kept = [i for i in (int(x) for x in ids) if i not in control]
        return self.hf.decode(kept, skip_special_tokens=self.skip_special_on_decode)

    def token_bytes(self) -> list[bytes]:
        """Each id's bytes as the wrapped tokenizer's decoder spells them (byte-level and SentencePiece-style
        pipelines; others raise, naming the decoder): see :mod:`plugformer_text.token_bytes`."""
        return spelling.token_bytes(self.hf, f"'{self.kind}'")

    def special_token_ids(self) -> set[int]:
        """eos/pad/mask, every special added token, the unknown token and ids no token claims."""
        return super().special_token_ids() | spelling.special_ids(self.hf)

    def save(self, directory: Path) -> None:
        self.hf.save(str(Path(directory) / FILENAME))

    @classmethod
    def load(cls, config: Any, directory: Path) -> HFBackedTokenizer:
        tokenizer = cls(config)
        tokenizer._adopt(HFTokenizer.from_file(str(Path(directory) / FILENAME)))
        return tokenizer

    def fingerprint(self) -> str:
        """Hash of the serialized tokenizer and role ids: equal exactly when the id mapping is equal."""
        if not self._fingerprint:
            raise RuntimeError(self._untrained_message())
        return self._fingerprint
