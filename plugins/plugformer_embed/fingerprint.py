"""The fingerprint of a checkpoint: what its embeddings depend on, as one hex digest.

A checkpoint records no digest of its own, so the fingerprint is the SHA-256 over the files that determine a
model's outputs: the weights (``model.safetensors``), the config the model is rebuilt from (``config.yaml``), a
quantized checkpoint's ``quantization.json`` and every file of its ``tokenizer/``. Optimizer and trainer state
are left out (they do not change the vectors), and so is the checkpoint's path (a moved or copied checkpoint
embeds alike). Each file's hash is cached in the process by path, size and modification time, so an index
build and its queries hash a large model once.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from plugformer.checkpoint import CONFIG_FILE, MODEL_FILE, QUANTIZATION_FILE, TOKENIZER_DIR

#: (resolved path, size, mtime_ns) -> the file's SHA-256
_FILE_HASHES: dict[tuple[str, int, int], str] = {}
_BLOCK = 1 << 20


def file_sha256(path: Path) -> str:
    """The SHA-256 hex digest of ``path``'s bytes, cached while its size and mtime stay the same."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    digest = _FILE_HASHES.get(key)
    if digest is None:
        sha = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(_BLOCK):
                sha.update(block)
        digest = _FILE_HASHES[key] = sha.hexdigest()
    return digest


def fingerprinted_files(checkpoint: Path) -> list[Path]:
    """The files of ``checkpoint`` that determine its outputs, relative to it, in a fixed order."""
    checkpoint = Path(checkpoint)
    names = [Path(MODEL_FILE), Path(CONFIG_FILE)]
    if (checkpoint / QUANTIZATION_FILE).is_file():
        names.append(Path(QUANTIZATION_FILE))
    tokenizer = checkpoint / TOKENIZER_DIR
    if tokenizer.is_dir():
        names += sorted(p.relative_to(checkpoint) for p in tokenizer.rglob("*") if p.is_file())
    return names


def checkpoint_fingerprint(checkpoint: str | Path) -> str:
    """The SHA-256 (hex) over :func:`fingerprinted_files` of ``checkpoint`` (names and contents): equal for
    two checkpoints exactly when their weights, model config and tokenizer files are equal."""
    checkpoint = Path(checkpoint)
    sha = hashlib.sha256()
    for name in fingerprinted_files(checkpoint):
        sha.update(f"{name.as_posix()}\0{file_sha256(checkpoint / name)}\n".encode())
    return sha.hexdigest()


__all__ = ["checkpoint_fingerprint", "file_sha256", "fingerprinted_files"]
