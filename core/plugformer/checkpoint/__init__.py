"""Checkpoints and run directories: their layout, and every operation on them.

One owner for what plugformer keeps on disk (see :mod:`plugformer.checkpoint.layout` for the layout):

- :mod:`~plugformer.checkpoint.layout`: the name of every file and directory, :func:`resolve_checkpoint`;
- :mod:`~plugformer.checkpoint.state`: tensors to safetensors and the rest to JSON, never pickle
  (:func:`save_state`, :func:`load_state`, :func:`save_model`, :func:`load_model`, ...);
- :mod:`~plugformer.checkpoint.steps`: :class:`CheckpointDir`, the atomic ``step-N``/``last`` protocol;
- :mod:`~plugformer.checkpoint.writer`: :func:`write_model_checkpoint`, the one atomic writer of model
  checkpoints (merge, prune, quantize, consolidate, import);
- :mod:`~plugformer.checkpoint.loader`: :func:`load_config` (interpolation off),
  :func:`load_model_for_inference`, :func:`load_tokenizer`, :func:`check_checkpoint_dir`;
- :mod:`~plugformer.checkpoint.probes`: :func:`trained_adapter`, :func:`is_quantized`,
  :func:`quantization_record`, :func:`plugins_record`;
- :mod:`~plugformer.checkpoint.rundir`: the run directory: its lock (:func:`claim_run_dir`), whether it
  holds a run (:func:`run_contents`), where a resume starts (:func:`resume_checkpoint`), and its strict,
  repairable metrics log (:class:`MetricsLog`).

Importing this package imports neither torch nor OmegaConf: the layout constants are loaded at once,
everything else on first use.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from plugformer.checkpoint.layout import (
    ADAPTER_DIR,
    ADAPTER_MARKER_FILE,
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    DCP_DIR,
    LAST,
    LOCK_FILE,
    MERGE_FILE,
    METRICS_FILE,
    MODEL_FILE,
    OPTIMIZER_STATE,
    PEFT_CONFIG_FILE,
    PEFT_WEIGHTS_FILE,
    PLUGINS_FILE,
    QUANTIZATION_FILE,
    SUMMARY_FILE,
    TOKENIZER_DIR,
    TRAINER_STATE,
    resolve_checkpoint,
)
from plugformer.checkpoint.probes import is_quantized, plugins_record, quantization_record, trained_adapter
from plugformer.checkpoint.rundir import (
    MetricsLog,
    RunDirError,
    RunDirLock,
    claim_run_dir,
    finite_or_none,
    resume_checkpoint,
    run_contents,
)

if TYPE_CHECKING:
    from plugformer.checkpoint.loader import (
        InferenceModel,
        adapter_entry_name,
        attach_adapter,
        check_checkpoint_dir,
        load_config,
        load_model_for_inference,
        load_tokenizer,
    )
    from plugformer.checkpoint.state import (
        flatten_state,
        load_model,
        load_state,
        read_json,
        read_tensors,
        save_model,
        save_state,
        tensor_bytes,
        unflatten_state,
        write_json,
    )
    from plugformer.checkpoint.steps import CheckpointDir
    from plugformer.checkpoint.writer import (
        check_new_dir, check_new_file, new_directory, replace_model_file, write_model_checkpoint,
    )

_LAZY = {
    **dict.fromkeys(("flatten_state", "unflatten_state", "save_state", "load_state", "save_model", "load_model",
                     "write_json", "read_json", "read_tensors", "tensor_bytes"), "state"),
    "CheckpointDir": "steps",
    **dict.fromkeys(("write_model_checkpoint", "replace_model_file", "new_directory", "check_new_dir",
                     "check_new_file"), "writer"),
    **dict.fromkeys(("InferenceModel", "adapter_entry_name", "attach_adapter", "check_checkpoint_dir", "load_config",
                     "load_model_for_inference", "load_tokenizer"), "loader"),
}


def __getattr__(name: str) -> Any:
    """The names that need torch/OmegaConf, imported from their module on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'plugformer.checkpoint' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"plugformer.checkpoint.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "ADAPTER_DIR", "ADAPTER_MARKER_FILE", "CHECKPOINTS_DIR", "CONFIG_FILE", "DCP_DIR", "LAST", "LOCK_FILE",
    "MERGE_FILE", "METRICS_FILE", "MODEL_FILE", "OPTIMIZER_STATE", "PEFT_CONFIG_FILE", "PEFT_WEIGHTS_FILE",
    "PLUGINS_FILE", "QUANTIZATION_FILE", "SUMMARY_FILE", "TOKENIZER_DIR", "TRAINER_STATE", "CheckpointDir",
    "InferenceModel", "MetricsLog", "RunDirError", "RunDirLock", "adapter_entry_name", "attach_adapter",
    "check_checkpoint_dir", "check_new_dir", "check_new_file", "claim_run_dir", "finite_or_none", "flatten_state",
    "is_quantized", "load_config", "load_model", "load_model_for_inference", "load_state", "load_tokenizer",
    "new_directory", "plugins_record", "quantization_record", "read_json", "read_tensors", "replace_model_file",
    "resolve_checkpoint", "resume_checkpoint", "run_contents", "save_model", "save_state", "tensor_bytes",
    "trained_adapter", "unflatten_state", "write_json", "write_model_checkpoint",
]
