"""Whether the optional retrieval libraries are installed, checked without importing them."""
from __future__ import annotations

import importlib.util

FAISS_MISSING = "faiss-cpu is not installed (pip install 'plugformer[retrieval]')"
BM25S_MISSING = "bm25s is not installed (pip install 'plugformer[retrieval]')"


def faiss_available() -> tuple[bool, str]:
    """(True, "") when ``faiss`` can be imported; else (False, how to install it)."""
    if importlib.util.find_spec("faiss") is None:
        return False, FAISS_MISSING
    return True, ""


def bm25s_available() -> tuple[bool, str]:
    """(True, "") when ``bm25s`` can be imported; else (False, how to install it)."""
    if importlib.util.find_spec("bm25s") is None:
        return False, BM25S_MISSING
    return True, ""
