"""Availability of the adapters' optional libraries, checked without importing them."""
from __future__ import annotations

import importlib.util

PEFT_MISSING = "peft is not installed (pip install 'plugformer[lora]')"
BNB_MISSING = "bitsandbytes is not installed (pip install 'plugformer[quant]')"


def lora() -> tuple[bool, str]:
    """(True, "") when peft can be imported."""
    if importlib.util.find_spec("peft") is None:
        return False, PEFT_MISSING
    return True, ""


def qlora() -> tuple[bool, str]:
    """(True, "") when peft and bitsandbytes can be imported."""
    ok, reason = lora()
    if not ok:
        return ok, reason
    if importlib.util.find_spec("bitsandbytes") is None:
        return False, BNB_MISSING
    return True, ""
