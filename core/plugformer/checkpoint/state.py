"""State on disk without pickle: tensors to safetensors, everything else to JSON.

``flatten_state`` splits nested dicts/lists/tuples holding tensors (optimizer, scheduler, RNG state)
into a JSON skeleton and a flat tensor dict; ``save_state``/``load_state`` write and read the pair as
``<name>.json`` + ``<name>.safetensors``. ``save_model``/``load_model`` write and read a checkpoint's
``model.safetensors`` with tied weights stored once. A file that cannot be read is a one-line
:class:`~plugformer.errors.ConfigError` naming it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from plugformer.checkpoint.layout import MODEL_FILE
from plugformer.errors import ConfigError

_TENSOR = "__tensor__"
TIED_KEY = "tied"  # safetensors metadata of model.safetensors: {"lm_head.weight": "tok_emb.weight"}


def flatten_state(state: Any, prefix: str = "") -> tuple[Any, dict[str, torch.Tensor]]:
    """Split nested dicts/lists holding tensors into a JSON skeleton and a flat tensor dict."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(obj: Any, key: str) -> Any:
        if isinstance(obj, torch.Tensor):
            tensors[key] = obj.detach().cpu().contiguous()
            return {_TENSOR: key}
        if isinstance(obj, dict):
            pairs = enumerate(obj.items())
            return {"__dict__": [[walk(k, f"{key}.k{i}"), walk(v, f"{key}.{i}")] for i, (k, v) in pairs]}
        if isinstance(obj, (list, tuple)):
            kind = "__list__" if isinstance(obj, list) else "__tuple__"
            return {kind: [walk(v, f"{key}.{i}") for i, v in enumerate(obj)]}
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return obj
        raise TypeError(f"cannot store {type(obj).__name__} at {key!r} in a checkpoint (tensors and plain data only)")

    return walk(state, prefix or "s"), tensors


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten_state`."""
    if isinstance(skeleton, dict):
        if _TENSOR in skeleton:
            return tensors[skeleton[_TENSOR]]
        if "__dict__" in skeleton:
            return {unflatten_state(k, tensors): unflatten_state(v, tensors) for k, v in skeleton["__dict__"]}
        if "__list__" in skeleton:
            return [unflatten_state(v, tensors) for v in skeleton["__list__"]]
        if "__tuple__" in skeleton:
            return tuple(unflatten_state(v, tensors) for v in skeleton["__tuple__"])
    return skeleton


def read_tensors(file: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, string metadata) of a safetensors file; a missing, truncated, empty or malformed file
    is a one-line :class:`ConfigError` naming it."""
    file = Path(file)
    if not file.is_file():
        raise ConfigError(f"{file} does not exist")
    try:
        with safe_open(str(file), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except Exception as exc:  # safetensors raises its own error type (header too small/large, bad JSON, ...)
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        size = file.stat().st_size
        raise ConfigError(f"{file} is not a readable safetensors file ({size} bytes: {reason})") from None
    return tensors, metadata


def read_json(file: str | Path) -> Any:
    """A JSON file of a checkpoint; unreadable or malformed JSON is a one-line :class:`ConfigError`."""
    file = Path(file)
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{file} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{file} is not valid JSON ({' '.join(str(exc).split())[:160]})") from None


def save_state(directory: Path, name: str, state: Any) -> None:
    """Write ``state`` as ``<name>.json`` (+ ``<name>.safetensors`` when it holds tensors)."""
    skeleton, tensors = flatten_state(state)
    if tensors:
        save_file(tensors, str(Path(directory) / f"{name}.safetensors"))
    write_json(Path(directory) / f"{name}.json", skeleton)


def load_state(directory: Path, name: str) -> Any:
    """What :func:`save_state` wrote as ``name`` in ``directory``."""
    skeleton = read_json(Path(directory) / f"{name}.json")
    tensor_file = Path(directory) / f"{name}.safetensors"
    return unflatten_state(skeleton, read_tensors(tensor_file)[0] if tensor_file.exists() else {})


def unique_tensors(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(each tensor once as a contiguous CPU tensor, {tied key: the key holding the same tensor})."""
    unique: dict[str, torch.Tensor] = {}
    tied: dict[str, str] = {}
    by_storage: dict[tuple[Any, ...], str] = {}
    for key, t in state_dict.items():
        # tied = the very same view of the same memory (a transposed or reinterpreted view is not)
        where = (t.untyped_storage().data_ptr(), t.storage_offset()) if t.device.type != "meta" else (id(t), 0)
        ident = (*where, tuple(t.shape), t.stride(), t.dtype)
        if ident in by_storage:
            tied[key] = by_storage[ident]
            continue
        by_storage[ident] = key
        unique[key] = t.detach().cpu().contiguous()
    return unique, tied


def save_model(directory: Path, state_dict: dict[str, torch.Tensor]) -> None:
    """Write ``directory/model.safetensors``; tied weights are stored once and restored on load.

    Writes in place: use it inside a directory that is renamed into place afterwards (a checkpoint's
    temporary directory, :func:`plugformer.checkpoint.write_model_checkpoint`), or use
    :func:`plugformer.checkpoint.writer.replace_model_file` to replace the file of a finished checkpoint.
    """
    unique, tied = unique_tensors(state_dict)
    save_file(unique, str(Path(directory) / MODEL_FILE), metadata={TIED_KEY: json.dumps(tied)})


def save_tensors(directory: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write ``directory/model.safetensors`` holding ``tensors`` as they are, with ``metadata`` (a
    quantizer's own encoding, see :meth:`plugformer.interfaces.Quantizer.quantized_state`)."""
    save_file(tensors, str(Path(directory) / MODEL_FILE), metadata=metadata)


def load_model(directory: Path) -> dict[str, torch.Tensor]:
    """The state dict :func:`save_model` wrote into ``directory`` (tied keys filled in again)."""
    file = Path(directory) / MODEL_FILE
    state, metadata = read_tensors(file)
    try:
        tied = json.loads(metadata.get(TIED_KEY, "{}"))
        for key, source in tied.items():
            state[key] = state[source]
    except (json.JSONDecodeError, AttributeError, KeyError, TypeError):
        raise ConfigError(f"{file}: its '{TIED_KEY}' metadata does not name tensors of the file") from None
    return state


def write_json(path: Path, data: Any) -> None:
    """``data`` as indented JSON (plain data only)."""
    Path(path).write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")


def tensor_bytes(tensors: dict[str, torch.Tensor]) -> int:
    """Bytes the tensors occupy (what a safetensors file of them holds, headers aside)."""
    return sum(t.numel() * t.element_size() for t in tensors.values())


__all__ = ["TIED_KEY", "flatten_state", "load_model", "load_state", "read_json", "read_tensors", "save_model",
           "save_state", "save_tensors", "tensor_bytes", "unflatten_state", "unique_tensors", "write_json"]
