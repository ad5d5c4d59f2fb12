"""The ``hf`` tokenizer: any ``tokenizer.json`` on disk (HF ``tokenizers`` format), used as it is."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as HFTokenizer

from plugformer import ConfigError
from plugformer_text.hf_base import FILENAME, HFBackedTokenizer
from plugformer_text.specials import CANDIDATES


def resolve_path(path: str | Path) -> Path:
    """``path`` itself, or ``path/tokenizer.json`` for a directory (e.g. ``plugformer tokenizer train`` output)."""
    p = Path(path).expanduser()
    return p / FILENAME if p.is_dir() else p


class HFFileTokenizer(HFBackedTokenizer):
    """A pre-trained tokenizer read from ``config.path``; nothing to fit.

    Roles are found by name: ``eos_token``/``pad_token``/``mask_token`` in the config when set, else
    the first common spelling present (``<|endoftext|>``, ``</s>``, ``[SEP]`` ...; ``<pad>``,
    ``[PAD]``; ``<mask>``, ``[MASK]``). A file without an end-of-document token is a config error.
    Encoding adds no special tokens (no ``[CLS]``/``[SEP]`` post-processing) and decoding drops every
    special token. Lossless only if the file's own pipeline is, hence declared not lossless.
    """

    kind = "hf"
    skip_special_on_decode = True

    def __init__(self, config: Any, tok: HFTokenizer | None = None):
        super().__init__(config)
        if tok is None:
            tok = self._read(resolve_path(self._required_path()))
        self._adopt(tok)

    def _required_path(self) -> str:
        path = getattr(self.config, "path", None)
        if not path or path == "???":
            raise ConfigError("tokenizer 'hf' needs tokenizer.path=<tokenizer.json file or directory holding one>")
        return str(path)

    @staticmethod
    def _read(path: Path) -> HFTokenizer:
        """The tokenizer in ``path``, or a one-line ConfigError saying why not."""
        if not path.is_file():
            raise ConfigError(f"tokenizer 'hf': no tokenizer file at {path}")
        try:
            return HFTokenizer.from_file(str(path))
        except Exception as exc:  # the library raises plain Exception for malformed files
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(f"tokenizer 'hf': cannot read {path} as a tokenizer.json: {first}") from None

    def _role_tokens(self, tok: HFTokenizer) -> dict[str, str | None]:
        """Configured names win (and must exist); otherwise the first common spelling in the vocabulary."""
        vocab = tok.get_vocab(with_added_tokens=True)
        roles: dict[str, str | None] = {}
        for role, names in CANDIDATES.items():
            wanted = getattr(self.config, f"{role}_token", None)
            if wanted:
                if wanted not in vocab:
                    raise ConfigError(f"tokenizer 'hf': {role}_token {wanted!r} is not in the vocabulary")
                roles[role] = wanted
            else:
                roles[role] = next((n for n in names if n in vocab), None)
        if roles["eos"] is None:
            raise ConfigError("tokenizer 'hf': no end-of-document token found (looked for "
                              f"{', '.join(CANDIDATES['eos'])}); set tokenizer.eos_token=<token>")
        return roles

    @classmethod
    def load(cls, config: Any, directory: Path) -> HFFileTokenizer:
        """The copy :meth:`save` wrote into ``directory`` (``config.path`` is not read again)."""
        return cls(config, cls._read(Path(directory) / FILENAME))
