"""Importing optional libraries quietly: some (torchao, and peft or bitsandbytes which import it) log
warnings at import time that concern nothing the importing process does (kernels built for other GPUs,
torch's pytree deprecation notes)."""
from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from types import ModuleType

#: the loggers that speak at import time of torchao (imported by peft when installed)
NOISY_IMPORT_LOGGERS = ("torchao", "torch.utils._pytree")


def quiet_import(module: str, loggers: Sequence[str] = NOISY_IMPORT_LOGGERS) -> ModuleType:
    """``import module`` with ``loggers`` raised to ERROR for the duration of the import only."""
    handles = [logging.getLogger(name) for name in loggers]
    levels = [lg.level for lg in handles]
    for lg in handles:
        lg.setLevel(logging.ERROR)
    try:
        return importlib.import_module(module)
    finally:
        for lg, level in zip(handles, levels, strict=True):
            lg.setLevel(level)


__all__ = ["NOISY_IMPORT_LOGGERS", "quiet_import"]
