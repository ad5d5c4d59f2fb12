"""Whether the optional qdrant-client library is installed, checked without importing it."""
from __future__ import annotations

import importlib.util

QDRANT_MISSING = "qdrant-client is not installed (pip install 'plugformer[vectordb]')"


def qdrant_available() -> tuple[bool, str]:
    """(True, "") when ``qdrant_client`` can be imported; else (False, how to install it)."""
    if importlib.util.find_spec("qdrant_client") is None:
        return False, QDRANT_MISSING
    return True, ""
