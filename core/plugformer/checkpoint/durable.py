"""Making a written directory durable before it is renamed into place (fsync of files and directories)."""
from __future__ import annotations

import os
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


__all__ = ["fsync_dir", "fsync_tree"]
