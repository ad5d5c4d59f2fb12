"""Whether the ``serve`` extra (FastAPI, uvicorn, sse-starlette, prometheus-client) is installed, checked
without importing it."""
from __future__ import annotations

import importlib.util

SERVE_LIBRARIES = ("fastapi", "uvicorn", "sse_starlette", "prometheus_client")


def serve_available() -> tuple[bool, str]:
    """(True, "") when every serving library can be imported; else (False, what is missing and how to install)."""
    missing = [name for name in SERVE_LIBRARIES if importlib.util.find_spec(name) is None]
    if missing:
        return False, f"{', '.join(missing)} not installed (pip install 'plugformer[serve]')"
    return True, ""
