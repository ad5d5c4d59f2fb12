"""Whether the optional wordllama library is installed, checked without importing it."""
from __future__ import annotations

import importlib.util

WORDLLAMA_MISSING = "wordllama is not installed (pip install 'plugformer[embed]')"


def wordllama_available() -> tuple[bool, str]:
    """(True, "") when ``wordllama`` can be imported; else (False, how to install it)."""
    if importlib.util.find_spec("wordllama") is None:
        return False, WORDLLAMA_MISSING
    return True, ""
