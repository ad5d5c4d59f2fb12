"""``key=value`` arguments for the commands that do not compose a Hydra config (import-hf, export-hf,
eval, consolidate, merge, quantize, ...)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from plugformer.errors import PlugformerError, did_you_mean


def parse_keyvalues(command: str, args: Sequence[str], keys: Sequence[str], required: Sequence[str] = (),
                    positional: str | None = None) -> dict[str, str]:
    """``{key: value}`` from ``args``; unknown, repeated or empty keys and missing required ones are errors.

    ``positional`` names the key a single bare argument (no ``=``) stands for, e.g. the directory of
    ``plugformer import-hf DIR``.
    """
    values: dict[str, str] = {}
    for arg in args:
        key, eq, value = arg.partition("=")
        if not eq and positional is not None and positional not in values:
            key, value = positional, arg
        elif not eq:
            raise PlugformerError(f"plugformer {command} takes key=value arguments, got '{arg}'; keys: "
                                  f"{', '.join(keys)}")
        if key not in keys:
            raise PlugformerError(f"plugformer {command} has no option '{key}'{did_you_mean(key, keys)}; "
                                  f"keys: {', '.join(keys)}")
        if key in values:
            raise PlugformerError(f"plugformer {command}: '{key}' given twice")
        if not value:
            raise PlugformerError(f"plugformer {command}: '{key}=' needs a value")
        values[key] = value
    for key in required:
        if key not in values:
            raise PlugformerError(f"plugformer {command} needs {key}=...; keys: {', '.join(keys)}")
    return values


def checkpoint_path(value: str) -> Path:
    """``checkpoint=`` as a directory (:func:`plugformer.checkpoint.resolve_checkpoint`)."""
    from plugformer.checkpoint import resolve_checkpoint

    return resolve_checkpoint(value)
