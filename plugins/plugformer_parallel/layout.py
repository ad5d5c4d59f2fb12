"""Where a sharded checkpoint keeps its files (no torch import: every strategy checks this on load)."""
from __future__ import annotations

from pathlib import Path

from plugformer.checkpoint import DCP_DIR  # torch.distributed.checkpoint shards + .metadata, inside step-N
LAYOUT_FILE = "optimizer.json"  # the optimizer state's non-tensor skeleton, inside DCP_DIR


def is_sharded(directory: Path) -> bool:
    """Whether ``directory`` holds a DCP checkpoint (written by the ``fsdp`` strategy)."""
    return (Path(directory) / DCP_DIR / ".metadata").is_file()
