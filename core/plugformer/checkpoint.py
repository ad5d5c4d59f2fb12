"""Checkpoints on disk: safetensors for every tensor, JSON for the rest, no pickle anywhere.

A checkpoint is a directory ``checkpoints/step-N/`` written under a temporary name and renamed into
place once complete, so a run killed at any moment keeps its last good checkpoint. ``checkpoints/last``
is a symlink swapped atomically to the newest one.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

MODEL_FILE = "model.safetensors"
LAST = "last"
_TENSOR = "__tensor__"


def flatten_state(state: Any, prefix: str = "") -> tuple[Any, dict[str, torch.Tensor]]:
    """Split nested dicts/lists holding tensors into a JSON skeleton and a flat tensor dict."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(obj: Any, key: str) -> Any:
        if isinstance(obj, torch.Tensor):
            tensors[key] = obj.detach().cpu().contiguous()
            return {_TENSOR: key}
        if isinstance(obj, dict):
            return {"__dict__": [[walk(k, f"{key}.k{i}"), walk(v, f"{key}.{i}")] for i, (k, v) in enumerate(obj.items())]}
        if isinstance(obj, (list, tuple)):
            return {"__list__" if isinstance(obj, list) else "__tuple__": [walk(v, f"{key}.{i}") for i, v in enumerate(obj)]}
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


def save_state(directory: Path, name: str, state: Any) -> None:
    """Write ``state`` as ``<name>.json`` (+ ``<name>.safetensors`` when it holds tensors)."""
    skeleton, tensors = flatten_state(state)
    if tensors:
        save_file(tensors, str(Path(directory) / f"{name}.safetensors"))
    write_json(Path(directory) / f"{name}.json", skeleton)


def load_state(directory: Path, name: str) -> Any:
    skeleton = json.loads((Path(directory) / f"{name}.json").read_text())
    tensor_file = Path(directory) / f"{name}.safetensors"
    return unflatten_state(skeleton, load_file(str(tensor_file)) if tensor_file.exists() else {})


def save_model(directory: Path, state_dict: dict[str, torch.Tensor]) -> None:
    """Write the model weights; tied weights are stored once and restored on load."""
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
    save_file(unique, str(Path(directory) / MODEL_FILE), metadata={"tied": json.dumps(tied)})


def load_model(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    path = str(Path(directory) / MODEL_FILE)
    with safe_open(path, framework="pt") as f:
        tied = json.loads((f.metadata() or {}).get("tied", "{}"))
    state = load_file(path)
    for key, source in tied.items():
        state[key] = state[source]
    return state


def write_json(path: Path, data: Any) -> None:
    Path(path).write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")


def _fsync_tree(directory: Path) -> None:
    for path in Path(directory).rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())


class CheckpointDir:
    """Writes ``step-N`` directories atomically under ``root`` and keeps ``last`` pointing at the newest.

    Protocol (every rank may write into the temporary directory between the two calls):
    ``tmp = begin(step)`` on the main rank → files written into ``tmp_dir(step)`` → ``commit(step)`` on the
    main rank fsyncs, renames the directory to ``step-N``, swaps ``last`` and prunes old checkpoints.
    A crash before ``commit`` leaves only a ``.tmp-step-N`` directory, which is never read.
    """

    def __init__(self, root: Path, keep_last: int = 2):
        self.root = Path(root)
        self.keep_last = keep_last

    def step_dir(self, step: int) -> Path:
        return self.root / f"step-{step}"

    def tmp_dir(self, step: int) -> Path:
        return self.root / f".tmp-step-{step}"

    @property
    def last(self) -> Path | None:
        """The newest complete checkpoint, or None."""
        link = self.root / LAST
        return link.resolve() if link.exists() else None

    def begin(self, step: int) -> Path:
        tmp = self.tmp_dir(step)
        shutil.rmtree(tmp, ignore_errors=True)  # leftovers of a crashed save
        tmp.mkdir(parents=True)
        return tmp

    def commit(self, step: int) -> Path:
        tmp, final = self.tmp_dir(step), self.step_dir(step)
        _fsync_tree(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        link_tmp = self.root / f".{LAST}.tmp"
        if link_tmp.is_symlink() or link_tmp.exists():
            link_tmp.unlink()
        os.symlink(final.name, link_tmp)
        os.replace(link_tmp, self.root / LAST)
        self._prune(keep=final)
        return final

    def _prune(self, keep: Path) -> None:
        for stale in self.root.glob(".tmp-step-*"):  # leftovers of saves that crashed before commit
            shutil.rmtree(stale, ignore_errors=True)
        steps = sorted((p for p in self.root.glob("step-*") if p.is_dir()), key=lambda p: int(p.name[5:]))
        for old in steps[:-self.keep_last] if self.keep_last > 0 else []:
            if old != keep:
                shutil.rmtree(old, ignore_errors=True)
