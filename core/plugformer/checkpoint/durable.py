"""Making a written directory durable before it is renamed into place (fsync of files and directories)."""
from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """fsync the directory entry itself (so a rename or new file in it survives a crash)."""
    fd = os.open(str(directory), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(directory: Path) -> None:
    """fsync every file and directory under ``directory`` (itself included)."""
    directory = Path(directory)
    for path in directory.rglob("*"):
        if path.is_symlink():
            continue
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        elif path.is_dir():
            fsync_dir(path)
    fsync_dir(directory)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all: a temporary file beside it, fsynced, renamed into
    place (a crash leaves either nothing or the complete file, never a truncated one)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _previous(out: Path) -> Path:
    return out.parent / f".old-{out.name}"


def recover_directory(out: Path) -> None:
    """Finish a :func:`replacing_directory` that a crash interrupted between its two renames: if ``out`` is
    missing but its previous version is still set aside, put the previous version back (the last good state)."""
    out, previous = Path(out), _previous(Path(out))
    if not out.exists() and previous.is_dir():
        os.replace(previous, out)
        fsync_dir(out.parent)


@contextlib.contextmanager
def replacing_directory(out: str | Path) -> Iterator[Path]:
    """``with replacing_directory(out) as tmp:`` write the new version of directory ``out`` into ``tmp``; when the
    block completes, ``tmp`` is fsynced and swapped in (the old version is set aside, the new one renamed into
    place, the old one removed). If the block fails, ``out`` is untouched; a crash during the swap leaves the old
    version beside it, which :func:`recover_directory` restores. Indexes, which are updated in place, are written
    this way; :func:`plugformer.checkpoint.new_directory` is the one for directories written once."""
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    recover_directory(out)
    tmp, previous = out.parent / f".tmp-{out.name}", _previous(out)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        fsync_tree(tmp)
        shutil.rmtree(previous, ignore_errors=True)
        if out.exists():
            os.replace(out, previous)
        os.replace(tmp, out)
        fsync_dir(out.parent)
        shutil.rmtree(previous, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


__all__ = ["fsync_dir", "fsync_tree", "recover_directory", "replacing_directory", "write_text_atomic"]
