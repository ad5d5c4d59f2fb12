"""Availability checks that never import torch, so ``plugformer plugins`` lists fast and torch-free."""
from __future__ import annotations

import re
import sys
from importlib import metadata

from plugformer import Availability


def _torch_version() -> tuple[int, int] | None:
    """(major, minor) of the installed torch, read from package metadata (None when unknown)."""
    try:
        match = re.match(r"(\d+)\.(\d+)", metadata.version("torch"))
    except metadata.PackageNotFoundError:
        return None
    return (int(match[1]), int(match[2])) if match else None


def adafactor() -> Availability:
    """Whether this torch has ``torch.optim.Adafactor`` (added in torch 2.5)."""
    torch = sys.modules.get("torch")
    if torch is not None:  # already imported: ask it directly
        has_it, version = hasattr(torch.optim, "Adafactor"), torch.__version__
    else:
        found = _torch_version()
        has_it, version = found is not None and found >= (2, 5), ".".join(map(str, found or ())) or "unknown"
    return (True, "") if has_it else (False, f"torch.optim.Adafactor needs torch >= 2.5 (torch here: {version})")
