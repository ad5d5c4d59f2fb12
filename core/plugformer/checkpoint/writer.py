"""The one writer of model checkpoints (what ``generate``/``finetune``/``export`` read): merged, pruned,
quantized, consolidated and imported models all go through :func:`write_model_checkpoint`.

Atomic: everything is written into a temporary sibling directory, every file and the directory are
fsynced, and the directory is renamed into place with ``os.replace``; on any failure the temporary
directory is removed and ``out`` is left as it was.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from plugformer.checkpoint.durable import fsync_dir, fsync_tree
from plugformer.checkpoint.layout import CONFIG_FILE, MODEL_FILE, PLUGINS_FILE, TOKENIZER_DIR
from plugformer.checkpoint.state import save_model, save_tensors, write_json
from plugformer.errors import ConfigError


def write_model_checkpoint(out: str | Path, config: DictConfig | Mapping[str, Any], state_dict: dict[str, torch.Tensor],
                           *, metadata: dict[str, str] | None = None, tokenizer: Any = None,
                           source: str | Path | None = None, records: Mapping[str, Any] | None = None) -> Path:
    """Write a model-only checkpoint to ``out`` atomically and return ``out``.

    - ``state_dict``: the model's weights, written by :func:`save_model` (tied weights once); with
      ``metadata`` the tensors are written as they are with that metadata instead (a quantizer's
      encoding, which carries its own ``tied`` record);
    - ``config``: becomes ``config.yaml``;
    - ``tokenizer``: a :class:`~plugformer.interfaces.Tokenizer` (saved with ``.save``) or a tokenizer
      directory to copy; default: ``source``'s ``tokenizer/``;
    - ``source``: the checkpoint this one derives from; its ``tokenizer/`` and ``plugins.json`` are copied;
    - ``records``: ``{file name: JSON data}`` written next to the weights (``quantization.json``, ...).

    ``out`` must not exist or be empty (a one-line :class:`ConfigError` otherwise).
    """
    out = check_new_dir(out)
    if tokenizer is None and source is None:
        raise ConfigError(f"cannot write checkpoint {out} without a tokenizer (pass tokenizer= or source=)")
    source = Path(source) if source is not None else None
    with new_directory(out) as tmp:
        if metadata is None:
            save_model(tmp, state_dict)
        else:
            save_tensors(tmp, state_dict, metadata)
        (tmp / CONFIG_FILE).write_text(OmegaConf.to_yaml(config, resolve=True))
        _write_tokenizer(tmp / TOKENIZER_DIR, tokenizer if tokenizer is not None else source / TOKENIZER_DIR)
        if source is not None and (source / PLUGINS_FILE).is_file():
            shutil.copy2(source / PLUGINS_FILE, tmp / PLUGINS_FILE)
        for name, data in (records or {}).items():
            write_json(tmp / name, data)
    return out


@contextlib.contextmanager
def new_directory(out: str | Path) -> Iterator[Path]:
    """``with new_directory(out) as tmp:`` write files into ``tmp``; when the block completes, ``tmp`` is
    fsynced and renamed to ``out`` (absent or empty, checked first); if it fails, ``tmp`` is removed and
    ``out`` is left as it was. Every directory plugformer writes whole (checkpoints, Hugging Face exports,
    indexes) goes through here."""
    out = check_new_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".tmp-{out.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        fsync_tree(tmp)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
        fsync_dir(out.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_new_dir(out: str | Path) -> Path:
    """``out`` as a Path if a checkpoint may be written there (absent or an empty directory), else one line.
    Operations call it before their work, so a taken ``out`` is refused before anything is loaded."""
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"out={out} already exists and is not empty; choose a new directory")
    return out


def check_new_file(out: str | Path) -> Path:
    """``out`` as a Path if a result file may be written there (it does not exist yet), else one line: an
    ``out=FILE`` never replaces an earlier result. Commands call it before their work."""
    out = Path(out).expanduser()
    if out.exists():
        raise ConfigError(f"out={out} already exists; choose a new file name (results are never overwritten)")
    return out


def _write_tokenizer(target: Path, tokenizer: Any) -> None:
    if isinstance(tokenizer, (str, Path)):
        if not Path(tokenizer).is_dir():
            raise ConfigError(f"tokenizer directory {tokenizer} does not exist")
        shutil.copytree(tokenizer, target)
    else:
        target.mkdir()
        tokenizer.save(target)


def replace_model_file(directory: str | Path, state_dict: dict[str, torch.Tensor]) -> Path:
    """Write ``directory/model.safetensors`` of an existing checkpoint atomically (a temporary file
    fsynced and renamed over it); returns the file. Used where the weights are added to a finished
    checkpoint, e.g. consolidating a sharded one in place."""
    directory = Path(directory)
    tmp = directory / f".tmp-{MODEL_FILE}.d"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        save_model(tmp, state_dict)
        fsync_tree(tmp)
        os.replace(tmp / MODEL_FILE, directory / MODEL_FILE)
        fsync_dir(directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory / MODEL_FILE


__all__ = ["check_new_dir", "check_new_file", "new_directory", "replace_model_file", "write_model_checkpoint"]
