"""The token pipeline between text sources and the trainer.

* :func:`tokenize_to_cache` tokenizes a split once into a flat, memory-mapped token file (documents
  joined by ``eos_id``), keyed by the source's and tokenizer's fingerprints and written atomically.
* :func:`fit_tokenizer_cached` trains a tokenizer once per (source, tokenizer config) and reloads it
  on later runs.
* :class:`WindowSampler` draws training windows that depend only on ``(seed, step)``, so a resumed run
  and every rank see the same global batch.
* :func:`eval_windows` yields fixed evaluation windows from the start of a split.

No plugin is imported here: sources and tokenizers arrive as objects honouring the interfaces.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from plugformer.errors import ConfigError
from plugformer.interfaces import DocumentPart, TextSource, Tokenizer

CACHE_FORMAT = 1
BATCH_CHARS = 1 << 21  # encode about this many characters per encode_batch call
BATCH_DOCS = 1024  # ... or this many documents, whichever comes first


# -- cache locations -------------------------------------------------------------------------------
def cache_root() -> Path:
    """Where plugformer caches derived data: ``$PLUGFORMER_CACHE`` or ``~/.cache/plugformer``."""
    env = os.environ.get("PLUGFORMER_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "plugformer"


def default_cache_dir() -> Path:
    """The default directory for token files: ``<cache_root>/tokens``."""
    return cache_root() / "tokens"


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds every id: uint16 up to 65535 ids' range, else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 65535 else np.dtype(np.uint32)


def token_cache_path(source: TextSource, tokenizer: Tokenizer, split: str,
                     cache_dir: Path | str | None = None) -> Path:
    """The file :func:`tokenize_to_cache` reads or writes for this (source, tokenizer, split)."""
    key = hashlib.sha256(
        f"v{CACHE_FORMAT}|{source.fingerprint()}|{tokenizer.fingerprint()}|{split}".encode()).hexdigest()[:24]
    dtype = token_dtype(tokenizer.vocab_size)
    return Path(cache_dir or default_cache_dir()) / f"{split}-{key}.{dtype.name}.bin"


# -- tokenizing a split ----------------------------------------------------------------------------
def _batches(docs: Iterable[str]) -> Iterator[list[str]]:
    """Group documents so each ``encode_batch`` call gets enough work to parallelise well."""
    batch: list[str] = []
    chars = 0
    for doc in docs:
        batch.append(doc)
        chars += len(doc)
        if chars >= BATCH_CHARS or len(batch) >= BATCH_DOCS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def _flatten(encoded: list[list[int]], eos_id: int, dtype: np.dtype, vocab_size: int,
             parts: list[bool] | None = None) -> np.ndarray:
    """One array of the batch's ids with ``eos_id`` after every document (not after a piece that the next
    one continues, ``parts[i]`` True: a :class:`~plugformer.interfaces.DocumentPart`); rejects out-of-range ids."""
    flat: list[int] = []
    for i, ids in enumerate(encoded):
        flat.extend(ids)
        if not (parts and parts[i]):
            flat.append(eos_id)
    arr = np.asarray(flat, dtype=np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= vocab_size):
        raise ValueError(f"tokenizer produced id {int(arr.max())} outside its vocab_size {vocab_size}")
    return arr.astype(dtype)


def _open_tokens(path: Path, dtype: np.dtype) -> np.ndarray:
    """Memory-map a token file read-only (an empty file gives an empty array: mmap cannot map it)."""
    if path.stat().st_size == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")


def _progress_bar(enabled: bool | None, split: str) -> Any:
    """A tqdm bar over characters, shown after a second of work, by default only on a terminal."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    from tqdm.auto import tqdm

    return tqdm(desc=f"tokenizing {split}", unit="char", unit_scale=True, delay=1.0, disable=not enabled,
                leave=False)


def tokenize_to_cache(source: TextSource, tokenizer: Tokenizer, split: str, cache_dir: Path | str | None = None,
                      *, progress: bool | None = None) -> np.ndarray:
    """The token ids of ``split`` as a read-only memmap, tokenizing only on the first call.

    Documents stream through the tokenizer in batches of about :data:`BATCH_CHARS` characters and straight
    to disk, so memory stays bounded whatever the corpus size (a source yields a long document in pieces,
    :class:`~plugformer.interfaces.DocumentPart`); a progress bar counts characters on a terminal.

    The file is written to a temporary name in ``cache_dir`` and renamed into place once complete,
    so an interrupted run never leaves a partial file that a later run would trust. Concurrent
    writers (several ranks) are harmless: each renames an identical complete file.
    """
    if tokenizer.needs_fit:
        raise RuntimeError("tokenize_to_cache needs a fitted tokenizer; call fit() or fit_tokenizer_cached() first")
    path = token_cache_path(source, tokenizer, split, cache_dir)
    dtype = token_dtype(tokenizer.vocab_size)
    if path.is_file() and path.stat().st_size % dtype.itemsize == 0:
        return _open_tokens(path, dtype)

    path.parent.mkdir(parents=True, exist_ok=True)
    eos_id, vocab_size = tokenizer.eos_id, tokenizer.vocab_size
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    n_docs = n_tokens = 0
    try:
        with os.fdopen(fd, "wb") as out, _progress_bar(progress, split) as bar:
            for batch in _batches(source.documents(split)):
                parts = [isinstance(doc, DocumentPart) for doc in batch]
                arr = _flatten(tokenizer.encode_batch(batch), eos_id, dtype, vocab_size, parts)
                arr.tofile(out)
                n_docs += len(batch) - sum(parts)
                n_tokens += arr.size
                bar.update(sum(len(d) for d in batch))
            out.flush()
            os.fsync(out.fileno())
        _write_json_atomic(path.with_suffix(".json"), {
            "format": CACHE_FORMAT, "split": split, "source": source.fingerprint(),
            "tokenizer": tokenizer.fingerprint(), "dtype": dtype.name, "documents": n_docs, "tokens": n_tokens})
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return _open_tokens(path, dtype)


def _write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` as JSON via a temporary file and rename (informational metadata)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


# -- caching a trained tokenizer -------------------------------------------------------------------
def _config_text(config: Any) -> str:
    """A stable text form of a tokenizer config (dataclass, mapping or plain object)."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        data: Any = dataclasses.asdict(config)
    elif isinstance(config, Mapping):
        data = {str(k): config[k] for k in config}
    else:
        data = getattr(config, "__dict__", repr(config))
    return json.dumps(data, sort_keys=True, default=str)


def fit_tokenizer_cached(tokenizer: Tokenizer, source: TextSource, cache_dir: Path | str | None = None) -> Tokenizer:
    """``tokenizer`` ready to encode: fitted on ``source``'s train split, or reloaded if done before.

    The trained files are stored under ``<cache_root>/tokenizers/<key>`` (key: tokenizer class, its
    config and the source fingerprint) through the tokenizer's own ``save``/``load``. Tokenizers that
    need no fit are returned unchanged.
    """
    if not tokenizer.needs_fit:
        return tokenizer
    cls = type(tokenizer)
    key = hashlib.sha256(f"{cls.__module__}.{cls.__qualname__}|{_config_text(tokenizer.config)}|"
                         f"{source.fingerprint()}".encode()).hexdigest()[:24]
    root = Path(cache_dir) if cache_dir is not None else cache_root() / "tokenizers"
    final = root / key
    if final.is_dir():
        return cls.load(tokenizer.config, final)
    tokenizer.fit(source.documents("train"))
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
    try:
        tokenizer.save(tmp)
        os.replace(tmp, final)
    except OSError:
        if not final.is_dir():  # another process did not win the race: a real failure
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return tokenizer


# -- windows ---------------------------------------------------------------------------------------
def step_seed(seed: int, step: int) -> int:
    """A 63-bit generator seed that depends only on ``(seed, step)``."""
    digest = hashlib.blake2b(f"{int(seed)}:{int(step)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def _check_length(tokens: np.ndarray, seq_len: int, split: str) -> None:
    if seq_len < 1:
        raise ConfigError(f"seq_len must be positive, got {seq_len}")
    if len(tokens) < seq_len + 1:
        raise ConfigError(f"the {split} split has {len(tokens)} tokens, too few for one window of "
                          f"seq_len {seq_len} (needs {seq_len + 1}); use more data or a shorter seq_len")


def _gather(tokens: np.ndarray, starts: Iterable[int], width: int) -> torch.Tensor:
    """Rows ``tokens[s : s + width]`` for each start, as an int64 tensor."""
    rows = [np.asarray(tokens[s:s + width], dtype=np.int64) for s in starts]
    if not rows:
        return torch.empty(0, width, dtype=torch.long)
    return torch.from_numpy(np.stack(rows))


class WindowSampler:
    """Random training windows of ``seq_len + 1`` tokens whose positions depend only on ``(seed, step)``.

    The whole global batch's start offsets are drawn from a generator seeded by ``(seed, step)``; a
    caller may then materialise only some of its rows (``rows=slice(start, end)``), so each data-
    parallel rank reads its own share and a resumed run repeats the uninterrupted run exactly.
    """

    def __init__(self, tokens: np.ndarray, seed: int = 0, split: str = "train"):
        self.tokens = tokens
        self.seed = int(seed)
        self.split = split

    def starts(self, step: int, batch_size: int, seq_len: int) -> torch.Tensor:
        """Start offsets (int64, shape ``(batch_size,)``) of the global batch for ``step``."""
        _check_length(self.tokens, seq_len, self.split)
        generator = torch.Generator().manual_seed(step_seed(self.seed, step))
        return torch.randint(0, len(self.tokens) - seq_len, (batch_size,), generator=generator, dtype=torch.long)

    def batch(self, step: int, batch_size: int, seq_len: int, rows: slice | None = None) -> torch.Tensor:
        """Windows for ``step`` as a ``(n, seq_len + 1)`` LongTensor: the global batch, or its ``rows``."""
        starts = self.starts(step, batch_size, seq_len)
        if rows is not None:
            starts = starts[rows]
        return _gather(self.tokens, starts.tolist(), seq_len + 1)


def eval_windows(tokens: np.ndarray, n_batches: int | None, batch_size: int, seq_len: int,
                 split: str = "val", rows: slice | None = None) -> Iterator[torch.Tensor]:
    """Fixed evaluation batches from the start of ``tokens``: ``(batch, seq_len + 1)`` LongTensors.

    Window ``i`` starts at ``i * seq_len``, so consecutive windows share one boundary token and every
    token after the first is a target exactly once. Yields ``n_batches`` batches (all that fit when
    None or when the split is shorter; the last may then be smaller). ``rows`` takes a slice of each
    batch, e.g. one rank's share.
    """
    _check_length(tokens, seq_len, split)
    available = (len(tokens) - 1) // seq_len
    wanted = available if n_batches is None else min(available, int(n_batches) * batch_size)
    for first in range(0, wanted, batch_size):
        index = range(first, min(first + batch_size, wanted))
        if rows is not None:
            index = index[rows]
        yield _gather(tokens, (i * seq_len for i in index), seq_len + 1)
