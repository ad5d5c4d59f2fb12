"""Questions asked about a checkpoint before loading it: was it trained with an adapter, is it quantized."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from plugformer.checkpoint.layout import PLUGINS_FILE, QUANTIZATION_FILE
from plugformer.errors import ConfigError


def quantization_record(path: str | Path) -> dict[str, Any] | None:
    """The ``quantization.json`` of a quantized checkpoint (quantizer node, sizes), or None for a
    full-precision one. A malformed record is a one-line :class:`ConfigError`."""
    from plugformer.checkpoint.state import read_json

    file = Path(path) / QUANTIZATION_FILE
    if not file.is_file():
        return None
    record = read_json(file)
    node = record.get("quantizer") if isinstance(record, dict) else None
    if not isinstance(node, dict) or not isinstance(node.get("name"), str):
        raise ConfigError(f"{file} does not name its quantizer (expected {{\"quantizer\": {{\"name\": ...}}}})")
    return record


def plugins_record(path: str | Path) -> list[dict[str, Any]]:
    """The ``plugins.json`` of a checkpoint (the plugins it was written with, their versions and
    components), or ``[]``: an unreadable or malformed record only costs the hints that use it."""
    import json

    file = Path(path) / PLUGINS_FILE
    try:
        record = json.loads(file.read_text()) if file.is_file() else []
    except (OSError, ValueError):
        return []
    return record if isinstance(record, list) else []


def is_quantized(path: str | Path) -> bool:
    """Whether ``path`` is a quantized checkpoint (written by ``plugformer quantize``)."""
    return (Path(path) / QUANTIZATION_FILE).is_file()


def trained_adapter(checkpoint: str | Path | Any) -> str | None:
    """The adapter entry (``lora``, ``qlora``, ...) a checkpoint was trained with, or None when its
    weights are a plain model. ``checkpoint``: a checkpoint directory or its already loaded config."""
    from plugformer.checkpoint.loader import load_config

    cfg = load_config(checkpoint) if isinstance(checkpoint, (str, Path)) else checkpoint
    node = cfg.get("adapter") or {}
    name = node.get("name", "none") if hasattr(node, "get") else "none"
    return None if name in (None, "none") else str(name)


__all__ = ["is_quantized", "plugins_record", "quantization_record", "trained_adapter"]
