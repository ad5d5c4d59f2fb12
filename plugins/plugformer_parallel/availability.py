"""Availability checks that run when ``plugformer plugins`` lists the strategies: they find optional
libraries without importing them (nor torch), so the listing stays fast."""
from __future__ import annotations

import importlib.util

DEEPSPEED_NOT_INSTALLED = "deepspeed is not installed (pip install 'plugformer[deepspeed]')"


def deepspeed() -> tuple[bool, str]:
    """(ok, reason): the deepspeed strategy runs when the deepspeed package is installed."""
    if importlib.util.find_spec("deepspeed") is None:
        return False, DEEPSPEED_NOT_INSTALLED
    return True, ""
