"""The byte tokenizer: UTF-8 bytes are the ids, so it needs no training and round-trips any text."""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from plugformer.interfaces import Tokenizer

FILENAME = "tokenizer.json"
KIND = "plugformer-byte"
FORMAT_VERSION = 2  # 1: 257 ids (no <pad>/<mask>); 2: 259 ids
_VOCAB = {1: 257, 2: 259}


class ByteTokenizer(Tokenizer):
    """Ids 0-255 are the bytes of the UTF-8 encoding; 256 is ``<eos>``, 257 ``<pad>``, 258 ``<mask>``.

    The smallest useful tokenizer: a fixed 259-symbol vocabulary, no fitting, and an exact round trip
    of any UTF-8 text. Sequences are about 4x longer than with BPE on English or code. A directory
    saved by the earlier 257-symbol version loads as that version (no pad/mask), so its checkpoints
    and token caches stay valid.
    """

    EOS = 256
    PAD = 257
    MASK = 258

    def __init__(self, config: Any, version: int = FORMAT_VERSION):
        super().__init__(config)
        self._version = version

    @property
    def vocab_size(self) -> int:
        return _VOCAB[self._version]

    @property
    def eos_id(self) -> int:
        return self.EOS

    @property
    def pad_id(self) -> int | None:
        return self.PAD if self._version >= 2 else None

    @property
    def mask_id(self) -> int | None:
        return self.MASK if self._version >= 2 else None

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [list(t.encode("utf-8")) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        """Bytes back to text; special ids are dropped and broken UTF-8 (from sampling) becomes U+FFFD."""
        data = bytes(i for i in (int(x) for x in ids) if 0 <= i < 256)
        return data.decode("utf-8", errors="replace")

    def token_bytes(self) -> list[bytes]:
        """Id ``b`` < 256 is the byte ``b``; the special ids give their names (``<eos>``, ``<pad>``, ``<mask>``)."""
        names = [b"<eos>", b"<pad>", b"<mask>"][:self.vocab_size - 256]
        return [bytes([b]) for b in range(256)] + names

    def save(self, directory: Path) -> None:
        meta = {"type": KIND, "version": self._version, "vocab_size": self.vocab_size, "eos_id": self.eos_id,
                "pad_id": self.pad_id, "mask_id": self.mask_id}
        (Path(directory) / FILENAME).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, config: Any, directory: Path) -> ByteTokenizer:
        path = Path(directory) / FILENAME
        meta = json.loads(path.read_text(encoding="utf-8"))
        if meta.get("type") != KIND or meta.get("version") not in _VOCAB:
            raise ValueError(f"{path} is not a plugformer byte tokenizer (versions {sorted(_VOCAB)})")
        return cls(config, version=int(meta["version"]))

    def fingerprint(self) -> str:
        return f"byte-v{self._version}"
