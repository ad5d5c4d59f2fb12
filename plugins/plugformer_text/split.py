"""Deterministic train/val assignment of documents by a stable hash of a key (path, record number).

Hashing a key (rather than taking every k-th document) keeps a document's split fixed when other
documents are added or removed, and does not depend on Python's randomized ``hash``.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

from plugformer import ConfigError


def key_score(key: str) -> float:
    """A uniform number in [0, 1) derived from ``key`` alone (identical across processes and runs)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def check_fraction(val_fraction: float, where: str) -> float:
    """Reject a val_fraction outside [0, 1) with a one-line message."""
    if not 0.0 <= float(val_fraction) < 1.0:
        raise ConfigError(f"{where}.val_fraction must be in [0, 1), got {val_fraction!r}")
    return float(val_fraction)


def val_keys(keys: Sequence[str], val_fraction: float, sizes: Sequence[int] | None = None) -> set[str]:
    """The keys held out for validation.

    Without ``sizes``: those whose score falls below ``val_fraction``. With ``sizes`` (bytes per key):
    keys in order of score until they hold ``val_fraction`` of all bytes, so that small corpora still get
    a validation split of the intended size. Either way, when a held-out split was asked for and there
    are at least two keys, at least the lowest-scoring key is held out.
    """
    if val_fraction <= 0.0 or not keys:
        return set()
    if sizes is not None:
        target, held, chosen = val_fraction * sum(sizes), 0, set()
        for _score, key, size in sorted(zip(map(key_score, keys), keys, sizes)):
            if held >= target or len(chosen) == len(keys) - 1:
                break
            chosen.add(key)
            held += size
        return chosen
    chosen = {k for k in keys if key_score(k) < val_fraction}
    if not chosen and len(keys) >= 2:
        chosen = {min(keys, key=key_score)}
    return chosen
