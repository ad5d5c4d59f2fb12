"""Config schemas of the built-in tokenizers and text sources (torch-free, so configs compose fast)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from plugformer.config import bounded

#: the largest vocabulary a trainable tokenizer may ask for (2^20; the largest published vocabularies are ~2^18):
#: the tokenizers library aborts the process on absurd sizes, so they are refused at compose time
MAX_VOCAB = 1 << 20

# Directories of the standard library that are tests, tools or data tables rather than ordinary code.
STDLIB_EXCLUDE = ["site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3",
                  "pydoc_data", "encodings", "__pycache__", "ensurepip"]


@dataclass
class ByteTokenizerConfig:
    """The byte tokenizer has a fixed vocabulary and takes no options."""


@dataclass
class BPETokenizerConfig:
    # target vocabulary, including the 256 byte symbols and <|endoftext|>, <pad>, <mask>
    vocab_size: int = bounded(4096, ge=1, le=MAX_VOCAB)
    min_frequency: int = bounded(2, ge=0)  # a pair must occur this often to be merged


@dataclass
class WordPieceTokenizerConfig:
    # target vocabulary, including <|endoftext|>, <pad>, <mask>, <unk>
    vocab_size: int = bounded(4096, ge=1, le=MAX_VOCAB)
    min_frequency: int = bounded(2, ge=0)  # a pair must occur this often to be merged
    lowercase: bool = False  # fold case before splitting (BERT "uncased")


@dataclass
class UnigramTokenizerConfig:
    # upper bound on all ids: pieces, 256 byte pieces, <unk>, <|endoftext|>, <pad>, <mask>
    vocab_size: int = bounded(4096, ge=1, le=MAX_VOCAB)
    max_piece_length: int = bounded(16, ge=1)  # longest piece (in characters) the trainer considers


@dataclass
class HFFileTokenizerConfig:
    path: str = "???"  # a tokenizer.json file, or a directory holding one (required)
    eos_token: Optional[str] = None  # end-of-document token; None: first of <|endoftext|>, </s>, [SEP] ...
    pad_token: Optional[str] = None  # padding token; None: <pad> or [PAD] if present
    mask_token: Optional[str] = None  # mask token; None: <mask> or [MASK] if present


@dataclass
class SentencePieceTokenizerConfig:
    path: str = "???"  # a SentencePiece .model file (required)
    eos_token: Optional[str] = None  # end-of-document piece; None: the model's eos, else <|endoftext|> ...
    pad_token: Optional[str] = None  # padding piece; None: the model's pad, else <pad> or [PAD]
    mask_token: Optional[str] = None  # mask piece; None: <mask> or [MASK] if present


@dataclass
class StdlibSourceConfig:
    max_bytes: int = bounded(4_000_000, ge=1)  # stop adding files (in sorted order) once this many bytes are taken
    val_fraction: float = bounded(0.05, ge=0, lt=1)  # share of files held out for validation (by a hash of the path)
    exclude: list[str] = field(default_factory=lambda: list(STDLIB_EXCLUDE))  # directory names skipped


@dataclass
class StdlibPairsConfig:
    """Docstring → code pairs of the standard library (``data=stdlib_pairs``), split by top-level module."""

    max_bytes: Optional[int] = bounded(None, ge=1)  # read files (in sorted order) until this many bytes; None: all
    val_fraction: float = bounded(0.1, gt=0, lt=1)  # share of the pairs held out, as whole top-level modules
    seed: int = bounded(0, ge=0)  # which modules are held out (a hash of the seed and the module's name)
    min_docstring_chars: int = bounded(40, ge=1)  # shorter docstrings say too little to find their function by
    min_code_lines: int = bounded(2, ge=1)  # non-blank lines of the function without its docstring (the def counts)
    hard_negatives: bool = False  # add "negative": another function of the same module (seeded)
    exclude: list[str] = field(default_factory=lambda: list(STDLIB_EXCLUDE))  # directory names skipped


@dataclass
class TextFileSourceConfig:
    path: str = "???"  # a .txt/.jsonl file or a directory of them (required)
    text_field: str = "text"  # the field of each .jsonl record that holds the document
    val_fraction: float = bounded(0.05, ge=0, lt=1)  # share of documents held out for validation (by a stable hash)
