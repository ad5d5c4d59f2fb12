"""Availability of the quantizers' optional libraries, checked without importing them."""
from __future__ import annotations

import importlib.util

TORCHAO_MISSING = "torchao is not installed (pip install 'plugformer[quant]')"
BNB_MISSING = "bitsandbytes is not installed (pip install 'plugformer[quant]')"


def torchao() -> tuple[bool, str]:
    """(True, "") when torchao can be imported."""
    if importlib.util.find_spec("torchao") is None:
        return False, TORCHAO_MISSING
    return True, ""


def bitsandbytes() -> tuple[bool, str]:
    """(True, "") when bitsandbytes can be imported."""
    if importlib.util.find_spec("bitsandbytes") is None:
        return False, BNB_MISSING
    return True, ""
