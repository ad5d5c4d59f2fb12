"""Whether the optional llguidance library is installed, checked without importing it."""
from __future__ import annotations

import importlib.util

LLGUIDANCE_MISSING = "llguidance is not installed (pip install 'plugformer[guide]')"


def llguidance_available() -> tuple[bool, str]:
    """(True, "") when ``llguidance`` can be imported; else (False, how to install it)."""
    if importlib.util.find_spec("llguidance") is None:
        return False, LLGUIDANCE_MISSING
    return True, ""
