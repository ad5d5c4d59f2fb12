"""Whether the ``xformers`` backend can run here, answered without importing torch when possible.

Kept apart from :mod:`plugformer_attention.xformers` (which imports torch) because
``plugformer plugins`` asks every entry for its availability and must stay fast and torch-free on
machines without xformers: torch is imported only once xformers is known to be installed.
"""
from __future__ import annotations

import importlib.util

NOT_INSTALLED = "xformers is not installed (pip install 'plugformer[xformers]')"
NO_CUDA = "xformers kernels need CUDA; no CUDA device visible"


def availability() -> tuple[bool, str]:
    """(ok, reason): xformers runs here only when it is installed, imports, and sees a CUDA device."""
    if importlib.util.find_spec("xformers") is None:
        return False, NOT_INSTALLED
    import torch

    if not torch.cuda.is_available():
        return False, NO_CUDA
    try:
        import xformers.ops  # noqa: F401  (a broken build fails here, e.g. compiled for another torch)
    except Exception as exc:  # noqa: BLE001 — any import failure means "unavailable", with its reason
        return False, f"xformers is installed but does not import: {type(exc).__name__}: {exc}"
    return True, ""
