"""The one owner of what a ``qdrant`` retriever writes into an index directory.

- ``qdrant.json``: the format, the location kind, the collection, the dimension and the point count; for a
  server also its url (never an API key);
- for the in-process locations, the points themselves: ``ids.json`` (chunk ids, in row order) and
  ``vectors.safetensors`` (one float32 ``(n, dim)`` tensor, ``vectors``).

qdrant-client's own on-disk local store is not used for this: it stores every point with ``pickle`` and
unpickles the whole store when opened, and nothing may execute code from an index directory. It is also slow
to write (one sqlite commit per point).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from plugformer import PlugformerError

MANIFEST = "qdrant.json"
IDS = "ids.json"
VECTORS = "vectors.safetensors"
FORMAT = "plugformer-qdrant"
VERSION = 1


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """Write ``qdrant.json`` (``format`` and ``version`` added)."""
    record = {"format": FORMAT, "version": VERSION, **manifest}
    (directory / MANIFEST).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_manifest(directory: Path) -> dict[str, Any]:
    """``qdrant.json`` as a dict, or one line naming the file and what is wrong with it."""
    path = directory / MANIFEST
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlugformerError(f"{path}: missing; this directory holds no saved qdrant retriever") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PlugformerError(f"{path}: unreadable ({error})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise PlugformerError(f"{path}: not a saved qdrant retriever (format {FORMAT!r} expected)")
    if record.get("version") != VERSION:
        raise PlugformerError(f"{path}: format version {record.get('version')!r}; this plugformer reads {VERSION}")
    return record


def write_points(directory: Path, ids: Sequence[str], vectors: np.ndarray) -> None:
    """Write the points: chunk ids and their vectors, row ``i`` belonging to ``ids[i]``."""
    from safetensors.numpy import save_file

    (directory / IDS).write_text(json.dumps(list(ids)) + "\n", encoding="utf-8")
    save_file({"vectors": np.ascontiguousarray(vectors, dtype=np.float32)}, str(directory / VECTORS))


def read_points(directory: Path, dim: int) -> tuple[list[str], np.ndarray]:
    """The saved (chunk ids, float32 ``(n, dim)`` vectors), or one line naming the file that is wrong."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    ids_path, vectors_path = directory / IDS, directory / VECTORS
    try:
        ids = json.loads(ids_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlugformerError(f"{ids_path}: missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PlugformerError(f"{ids_path}: unreadable ({error})") from None
    if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids) or len(set(ids)) != len(ids):
        raise PlugformerError(f"{ids_path}: expected a list of distinct non-empty chunk ids")
    try:
        vectors = load_file(str(vectors_path)).get("vectors")
    except FileNotFoundError:
        raise PlugformerError(f"{vectors_path}: missing") from None
    except (OSError, SafetensorError, ValueError) as error:
        raise PlugformerError(f"{vectors_path}: unreadable ({error})") from None
    if vectors is None or vectors.dtype != np.float32 or vectors.ndim != 2 or vectors.shape != (len(ids), dim):
        got = "no 'vectors' tensor" if vectors is None else f"{vectors.dtype} {tuple(vectors.shape)}"
        raise PlugformerError(f"{vectors_path}: expected float32 vectors of shape ({len(ids)}, {dim}), got {got}")
    if not np.isfinite(vectors).all():
        raise PlugformerError(f"{vectors_path}: contains NaN or infinite values")
    return ids, vectors
