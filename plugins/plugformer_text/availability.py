"""Availability checks for optional dependencies, importable without importing those dependencies."""
from __future__ import annotations

import importlib.util

SENTENCEPIECE_MISSING = "sentencepiece is not installed (pip install 'plugformer[sentencepiece]')"


def sentencepiece_available() -> tuple[bool, str]:
    """(True, "") when the ``sentencepiece`` package can be imported; else (False, how to install it)."""
    if importlib.util.find_spec("sentencepiece") is None:
        return False, SENTENCEPIECE_MISSING
    return True, ""
