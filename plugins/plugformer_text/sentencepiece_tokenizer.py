"""The ``sentencepiece`` tokenizer: a ``.model`` file read by the optional ``sentencepiece`` package."""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from plugformer import ConfigError
from plugformer.interfaces import Tokenizer
from plugformer_text.availability import SENTENCEPIECE_MISSING, sentencepiece_available
from plugformer_text.specials import CANDIDATES

FILENAME = "tokenizer.model"


def _processor(proto: bytes) -> Any:
    """A ``SentencePieceProcessor`` for a serialized model (imports the optional package here only)."""
    ok, _ = sentencepiece_available()
    if not ok:
        raise ConfigError(SENTENCEPIECE_MISSING)
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor()
    sp.LoadFromSerializedProto(proto)
    return sp


class SentencePieceTokenizer(Tokenizer):
    """A trained SentencePiece model (``config.path``), used as it is; nothing to fit.

    The end-of-document id is the model's own ``eos`` (or ``eos_token`` from the config, or a common
    spelling such as ``<|endoftext|>``); ``pad`` likewise; ``mask`` is found by name (``<mask>``,
    ``[MASK]``). SentencePiece normalizes text (NFKC, collapsed whitespace by default), so it is
    declared not lossless; ``decode(encode(text))`` is the model's normalized form of ``text``.
    Give a model its ``<mask>`` as a *control* symbol: SentencePiece matches user-defined symbols
    inside the text, so a document quoting ``<mask>`` would otherwise be masked.
    Saved as the model's own protobuf bytes (``tokenizer.model``).
    """

    def __init__(self, config: Any, proto: bytes | None = None):
        super().__init__(config)
        if proto is None:
            proto = self._read(self._required_path())
        try:
            self._sp = _processor(proto)
        except ConfigError:
            raise
        except Exception as exc:  # sentencepiece raises RuntimeError/OSError for malformed files
            raise ConfigError(f"tokenizer 'sentencepiece': not a SentencePiece model: "
                              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        self._proto = proto
        self._eos = self._role("eos", self._sp.eos_id())
        if self._eos is None:
            raise ConfigError("tokenizer 'sentencepiece': the model has no end-of-document token; "
                              "set tokenizer.eos_token=<piece>")
        self._pad = self._role("pad", self._sp.pad_id())
        self._mask = self._role("mask", -1)
        roles = f"{self._eos},{self._pad},{self._mask}"
        self._fingerprint = "spm-" + hashlib.sha256(proto + roles.encode()).hexdigest()[:16]

    def _required_path(self) -> Path:
        path = getattr(self.config, "path", None)
        if not path or path == "???":
            raise ConfigError("tokenizer 'sentencepiece' needs tokenizer.path=<file.model>")
        return Path(str(path)).expanduser()

    @staticmethod
    def _read(path: Path) -> bytes:
        if not path.is_file():
            raise ConfigError(f"tokenizer 'sentencepiece': no model file at {path}")
        return path.read_bytes()

    def _piece_id(self, piece: str) -> int | None:
        """The id of ``piece``, or None (SentencePiece answers unknown pieces with the unk id)."""
        i = self._sp.piece_to_id(piece)
        return i if self._sp.id_to_piece(i) == piece and not self._sp.is_unknown(i) else None

    def _role(self, role: str, native: int) -> int | None:
        """Configured piece, else the model's own id for the role, else a common spelling."""
        wanted = getattr(self.config, f"{role}_token", None)
        if wanted:
            found = self._piece_id(wanted)
            if found is None:
                raise ConfigError(f"tokenizer 'sentencepiece': {role}_token {wanted!r} is not a piece of the model")
            return found
        if native >= 0:
            return int(native)
        return next((i for i in map(self._piece_id, CANDIDATES[role]) if i is not None), None)

    @property
    def vocab_size(self) -> int:
        return int(self._sp.get_piece_size())

    @property
    def eos_id(self) -> int:
        return int(self._eos)  # type: ignore[arg-type]

    @property
    def pad_id(self) -> int | None:
        return self._pad

    @property
    def mask_id(self) -> int | None:
        return self._mask

    def encode(self, text: str) -> list[int]:
        return list(self._sp.encode(text, out_type=int))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [list(ids) for ids in self._sp.encode(list(texts), out_type=int)]

    def decode(self, ids: Iterable[int]) -> str:
        """Text for ``ids`` without eos/pad/mask (SentencePiece itself drops its control pieces)."""
        control = {i for i in (self._eos, self._pad, self._mask) if i is not None}
        return self._sp.decode([i for i in (int(x) for x in ids) if i not in control])

    def token_bytes(self) -> list[bytes]:
        """Each piece's bytes: ``▁`` is a space, a byte piece ``<0xNN>`` the byte ``NN``; control and unknown
        pieces give their names. With the model's dummy prefix (on by default) a text's first piece carries
        the space that decoding drops."""
        out = []
        for i in range(self.vocab_size):
            piece = self._sp.id_to_piece(i)
            if self._sp.is_byte(i):
                out.append(bytes([int(piece[3:5], 16)]))
            else:
                out.append(piece.encode("utf-8") if self._is_special(i) else piece.replace("▁", " ").encode("utf-8"))
        return out

    def _is_special(self, i: int) -> bool:
        return bool(self._sp.is_control(i) or self._sp.is_unknown(i) or self._sp.is_unused(i))

    def special_token_ids(self) -> set[int]:
        """eos/pad/mask and every control, unknown or unused piece."""
        return super().special_token_ids() | {i for i in range(self.vocab_size) if self._is_special(i)}

    def save(self, directory: Path) -> None:
        (Path(directory) / FILENAME).write_bytes(self._proto)

    @classmethod
    def load(cls, config: Any, directory: Path) -> SentencePieceTokenizer:
        """The copy :meth:`save` wrote (``config.path`` is not read again)."""
        return cls(config, cls._read(Path(directory) / FILENAME))

    def fingerprint(self) -> str:
        """Hash of the model bytes and role ids."""
        return self._fingerprint
