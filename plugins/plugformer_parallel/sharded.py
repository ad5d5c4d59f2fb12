"""Sharded checkpoints with torch.distributed.checkpoint (DCP), readable by every strategy.

Layout inside a ``step-N`` directory written by the ``fsdp`` strategy::

    dcp/.metadata          DCP's index of every tensor shard (torch's standard sharded format)
    dcp/__<rank>_0.distcp  each rank's shards of the model and the optimizer state (tensors only)
    dcp/optimizer.json     the optimizer state's non-tensor skeleton (param groups, hyper-parameters)
    model.safetensors      the consolidated full model, like any other checkpoint's (rank 0 writes it)

Only tensors go through DCP (everything else is JSON), so no pickled Python objects are stored but
DCP's own ``.metadata`` index; it is read with an unpickler that admits only DCP's metadata classes.
Tensors are keyed by parameter names (FQNs), so a checkpoint saved on N ranks loads on M ranks, or
on one process without any process group: resharding is DCP's job.
"""
from __future__ import annotations

import io
import pickle
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_state_dict,
                                                     set_model_state_dict, set_state_dict)

from plugformer.checkpoint import read_json, save_model, unflatten_state, write_json
from plugformer import ConfigError
from plugformer_parallel.layout import DCP_DIR, LAYOUT_FILE, is_sharded  # noqa: F401  (is_sharded: re-export)

_TENSOR = "__tensor__"


def _is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def split_tensors(state: Any, prefix: str = "") -> tuple[Any, dict[str, torch.Tensor]]:
    """A JSON skeleton (``plugformer.checkpoint`` encoding) and the tensors it refers to, keyed by path.

    Keys are built from dict keys (parameter names, state names), not positions, so the same state of
    a differently sharded run has the same keys. Tensors (DTensors too) are kept as they are.
    """
    tensors: dict[str, torch.Tensor] = {}

    def walk(obj: Any, key: str) -> Any:
        if isinstance(obj, torch.Tensor):
            tensors[key] = obj
            return {_TENSOR: key}
        if isinstance(obj, dict):
            return {"__dict__": [[k, walk(v, f"{key}/{k}" if key else str(k))] for k, v in obj.items()]}
        if isinstance(obj, (list, tuple)):
            tag = "__list__" if isinstance(obj, list) else "__tuple__"
            return {tag: [walk(v, f"{key}/{i}" if key else str(i)) for i, v in enumerate(obj)]}
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return obj
        raise TypeError(f"cannot store {type(obj).__name__} at {key!r} in a checkpoint (tensors and plain data only)")

    return walk(state, prefix), tensors


# -- reading DCP's .metadata without running arbitrary pickled code --------------------------------
_METADATA_CLASSES = {
    "torch.distributed.checkpoint.metadata": {"Metadata", "TensorStorageMetadata", "BytesStorageMetadata",
                                              "ChunkStorageMetadata", "TensorProperties", "MetadataIndex",
                                              "StorageMeta", "_MEM_FORMAT_ENCODING"},
    "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
    "torch": {"Size", "float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8",
              "bool", "complex64", "complex128", "float8_e4m3fn", "float8_e5m2", "strided", "sparse_coo",
              "contiguous_format", "channels_last", "preserve_format", "channels_last_3d"},
    "torch.serialization": {"_get_layout"},  # a name → torch.layout lookup
    "pathlib": {"PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath", "Path"},  # checkpoint_id
    "collections": {"OrderedDict"},
}


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if name in _METADATA_CLASSES.get(module, ()):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"DCP metadata refers to {module}.{name}, which is not a checkpoint "
                                     "metadata class; refusing to load it")


class SafeFileSystemReader(dcp.FileSystemReader):
    """DCP's file reader with a restricted unpickler for ``.metadata`` (tensor shards are read by DCP
    with ``torch.load(weights_only=True)`` already)."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
        from torch.distributed.checkpoint.metadata import StorageMeta

        rank = kwargs.get("rank")
        path = Path(self.path) / (".metadata" if rank is None else f"__{rank}.metadata")
        metadata = _MetadataUnpickler(io.BytesIO(path.read_bytes())).load()
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


# -- save / load -----------------------------------------------------------------------------------
def tied_names(model: nn.Module) -> dict[str, str]:
    """``{name: first name}`` for parameters that are the very same tensor as an earlier one (tied)."""
    first: dict[int, str] = {}
    tied: dict[str, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first:
            tied[name] = first[id(p)]
        else:
            first[id(p)] = name
    return tied


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The full (gathered, CPU) model state on rank 0 (an empty dict elsewhere); every rank must call it.
    Tied parameters share one tensor so :func:`plugformer.checkpoint.save_model` stores them once."""
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    for name, source in tied_names(model).items():
        if name in full and source in full:
            full[name] = full[source]
    return full


def _drop_aliases(model: nn.Module, state: dict[str, Any]) -> dict[str, str]:
    """Remove tied aliases (``lm_head.weight`` tied to ``tok_emb.weight``) from ``state``: a tied tensor is
    stored and loaded once. Returns ``{alias: source}`` for :func:`_restore_aliases`."""
    aliases = {a: s for a, s in tied_names(getattr(model, "module", model)).items() if a in state and s in state}
    for alias in aliases:
        del state[alias]
    return aliases


def _restore_aliases(state: dict[str, Any], aliases: dict[str, str]) -> None:
    for alias, source in aliases.items():
        state[alias] = state[source]


def write_now(directory: Path, state: dict[str, Any]) -> None:
    """DCP-save ``state`` into ``directory`` before returning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(state, storage_writer=dcp.FileSystemWriter(directory, thread_count=1))


def save_sharded(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                 write: Callable[[Path, dict[str, Any]], None] = write_now) -> None:
    """Every rank writes its shards into ``directory/dcp`` (through ``write``: now, or in the background);
    rank 0 adds the layout and ``model.safetensors``."""
    directory = Path(directory)
    model_state, optim_state = get_state_dict(model, optimizer)
    _drop_aliases(model, model_state)
    skeleton, optim_tensors = split_tensors(optim_state, "")
    write(directory / DCP_DIR, {"model": model_state, "optim": optim_tensors})
    full = full_model_state(model)
    if _is_main():
        write_json(directory / DCP_DIR / LAYOUT_FILE, skeleton)
        save_model(directory, full)


def check_metadata(directory: Path) -> None:
    """Read ``directory/dcp/.metadata`` through the restricted unpickler first, so a malicious or broken
    index is one line naming the file (inside ``dcp.load`` it would be a rank-gathered traceback)."""
    file = Path(directory) / DCP_DIR / ".metadata"
    try:
        SafeFileSystemReader(file.parent).read_metadata()
    except pickle.UnpicklingError as exc:
        raise ConfigError(f"{file}: {' '.join(str(exc).split())[:200]}") from None
    except Exception as exc:  # missing, truncated or not a pickle at all
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise ConfigError(f"{file} is not a readable DCP index ({type(exc).__name__}: {reason})") from None


def _dcp_load(directory: Path, state: dict[str, Any]) -> None:
    check_metadata(directory)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            dcp.load(state, storage_reader=SafeFileSystemReader(Path(directory) / DCP_DIR),
                     no_dist=not dist.is_initialized())
        except CheckpointException as exc:  # DCP gathers every rank's failure (missing key, size mismatch)
            raise ConfigError(f"checkpoint '{directory}' cannot be loaded into this run's model/optimizer: "
                              f"{' '.join(str(exc).split())[:500]}") from exc


def load_model_sharded(directory: Path, model: nn.Module) -> None:
    """Load only the model from ``directory/dcp`` into ``model`` (plain, DDP- or FSDP-wrapped)."""
    state = {"model": get_model_state_dict(model)}
    aliases = _drop_aliases(model, state["model"])
    _dcp_load(directory, state)
    _restore_aliases(state["model"], aliases)
    set_model_state_dict(model, state["model"])


def load_sharded(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
    """Restore model and optimizer from ``directory/dcp`` on every rank, whatever the world size was."""
    directory = Path(directory)
    if optimizer is None:
        load_model_sharded(directory, model)
        return
    model_state, optim_state = get_state_dict(model, optimizer)
    aliases = _drop_aliases(model, model_state)
    skeleton, optim = matching_optimizer_tensors(directory, optim_state)
    state = {"model": model_state, "optim": optim}
    _dcp_load(directory, state)
    _restore_aliases(state["model"], aliases)
    optim_loaded = unflatten_state(skeleton, state["optim"])
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=optim_loaded)


def matching_optimizer_tensors(directory: Path, optim_state: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """(saved optimizer skeleton, this run's optimizer tensors keyed as saved); a clear error when the
    saved optimizer state does not fit this run's optimizer and model."""
    _, optim_tensors = split_tensors(optim_state, "")
    skeleton = read_json(directory / DCP_DIR / LAYOUT_FILE)
    saved_keys = _skeleton_keys(skeleton)
    differ = sorted(set(saved_keys) ^ set(optim_tensors))
    if differ:
        raise ConfigError(f"checkpoint '{directory}': its optimizer state ({', '.join(differ[:3])}, ...) "
                          "does not match this run's optimizer (same optimizer and model needed to resume)")
    return skeleton, {k: optim_tensors[k] for k in saved_keys}


def _skeleton_keys(skeleton: Any) -> list[str]:
    keys: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if _TENSOR in node:
                keys.append(node[_TENSOR])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(skeleton)
    return keys
