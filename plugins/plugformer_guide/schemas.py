"""Config schema of the ``llguidance`` guide (torch-free)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from plugformer.config import bounded


@dataclass
class LLGuidanceConfig:
    # JSON outputs may put whitespace (spaces, newlines, tabs) between tokens, as JSON allows; False: compact
    # JSON, no whitespace outside strings ("," and ":" as separators)
    any_whitespace: bool = True
    # compiled constraints kept, most recently used first; a request repeating a cached spec skips compiling
    cache_size: int = bounded(64, ge=1, le=65536)
    # threads computing a batch's masks in parallel; None: the library's default (80% of the CPUs, at most 32)
    threads: Optional[int] = bounded(None, ge=1, le=1024)
