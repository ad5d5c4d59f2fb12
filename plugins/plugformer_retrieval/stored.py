"""Reading and writing a retriever's JSON files, so a missing or corrupted one is a one-line error naming it.

Every retriever of this package keeps its ids and bookkeeping as JSON next to its library's own files; the
index around it (``plugformer.retrieval.Index``) makes the whole directory's write atomic.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from plugformer import PlugformerError


def corrupted(path: Path, reason: object) -> PlugformerError:
    """The one-line error for an unreadable file of a saved retriever."""
    detail = " ".join(str(reason).split())
    return PlugformerError(f"saved retriever file {path} is missing or corrupted ({detail}); rebuild the index")


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` to ``path`` as UTF-8 JSON."""
    path.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")


def read_json(path: Path, keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """The JSON object in ``path`` (which must hold ``keys``), or :func:`corrupted`."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise corrupted(path, exc) from None
    if not isinstance(value, Mapping):
        raise corrupted(path, f"expected a JSON object, got {type(value).__name__}")
    missing = [key for key in keys if key not in value]
    if missing:
        raise corrupted(path, f"no {', '.join(missing)}")
    return dict(value)


def require_dir(path: Path) -> Path:
    """``path`` if it is a directory, else :func:`corrupted`."""
    if not path.is_dir():
        raise corrupted(path, "not a directory")
    return path

