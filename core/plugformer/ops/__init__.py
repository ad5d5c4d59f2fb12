"""Operations on checkpoints as library functions: :func:`prune`, :func:`quantize`, :func:`merge`,
:func:`consolidate`. Each takes paths and typed options, writes a new checkpoint atomically (through
:func:`plugformer.checkpoint.write_model_checkpoint`) and returns a small report whose ``out`` is the
written directory. The ``plugformer prune|quantize|merge|consolidate`` commands are thin wrappers.

Importing this package does not import torch; each operation is loaded on first use.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from plugformer.ops.consolidate import ConsolidateReport, consolidate
    from plugformer.ops.merge import MergeReport, merge
    from plugformer.ops.prune import PruneReport, prune
    from plugformer.ops.quantize import QuantizeReport, quantize

_LAZY = {"prune": "prune", "PruneReport": "prune", "quantize": "quantize", "QuantizeReport": "quantize",
         "merge": "merge", "MergeReport": "merge", "consolidate": "consolidate",
         "ConsolidateReport": "consolidate"}


def __getattr__(name: str) -> Any:
    """Each operation and its report, imported from its module on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'plugformer.ops' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"plugformer.ops.{module}"), name)
    globals()[name] = value
    return value


__all__ = ["ConsolidateReport", "MergeReport", "PruneReport", "QuantizeReport", "consolidate", "merge", "prune",
           "quantize"]
