"""Operations on checkpoints as library functions: :func:`prune`, :func:`quantize`, :func:`merge`,
:func:`consolidate`. Each takes paths and typed options, writes a new checkpoint atomically (through
:func:`plugformer.checkpoint.write_model_checkpoint`) and returns a small report whose ``out`` is the
written directory. The ``plugformer prune|quantize|merge|consolidate`` commands are thin wrappers that
import this package only when they run (it imports torch).
"""
from __future__ import annotations

from plugformer.ops.consolidate import ConsolidateReport, consolidate
from plugformer.ops.merge import MergeReport, merge
from plugformer.ops.prune import PruneReport, prune
from plugformer.ops.quantize import QuantizeReport, quantize

__all__ = ["ConsolidateReport", "MergeReport", "PruneReport", "QuantizeReport", "consolidate", "merge", "prune",
           "quantize"]
