"""The on-disk layout of run directories and checkpoints: the one place naming each file and directory.

Every other module uses these constants, so renaming a file (or looking for who reads it) happens here.
Importing this module imports neither torch nor OmegaConf (``plugformer report``/``sweep`` use it).

::

    <run dir>/
      config.yaml  plugins.json  summary.json  metrics.jsonl
      checkpoints/
        last -> step-N             symlink, swapped atomically
        step-N/
          config.yaml              the resolved config the model is rebuilt from
          model.safetensors        weights (tied weights stored once, "tied" metadata)
          optimizer.json/.safetensors, trainer_state.json/.safetensors
          plugins.json             the plugin manifest
          tokenizer/               written by Tokenizer.save
          adapter/                 an adapter's own files (PEFT format + plugformer_adapter.json)
          dcp/                     sharded strategies' torch.distributed.checkpoint shards
    <quantized checkpoint>/quantization.json   marks it quantized; names the quantizer
"""
from __future__ import annotations

from pathlib import Path

CONFIG_FILE = "config.yaml"  # the resolved config (run directory and every checkpoint)
MODEL_FILE = "model.safetensors"  # the model weights of a checkpoint
TOKENIZER_DIR = "tokenizer"  # the tokenizer's own files (Tokenizer.save / Tokenizer.load)
PLUGINS_FILE = "plugins.json"  # the plugin manifest of the process that wrote the run/checkpoint
QUANTIZATION_FILE = "quantization.json"  # marks a quantized checkpoint; names its quantizer and options
MERGE_FILE = "merge.json"  # what `plugformer merge` folded in (adapter, sources)
ADAPTER_DIR = "adapter"  # inside a checkpoint: the adapter's own files
ADAPTER_MARKER_FILE = "plugformer_adapter.json"  # next to PEFT's files: which adapter entry wrote them
PEFT_CONFIG_FILE = "adapter_config.json"  # PEFT's adapter config
PEFT_WEIGHTS_FILE = "adapter_model.safetensors"  # PEFT's adapter weights (the only format plugformer reads)
SUMMARY_FILE = "summary.json"  # <run dir>/summary.json, written when training reaches its last step
METRICS_FILE = "metrics.jsonl"  # <run dir>/metrics.jsonl, one JSON object per log/eval step
CHECKPOINTS_DIR = "checkpoints"  # <run dir>/checkpoints/step-N
LAST = "last"  # <run dir>/checkpoints/last -> step-N
STEP_PREFIX = "step-"  # checkpoints/step-<N>
DCP_DIR = "dcp"  # torch.distributed.checkpoint shards (+ their .metadata) inside a step-N directory
OPTIMIZER_STATE = "optimizer"  # save_state name: optimizer.json (+ optimizer.safetensors)
TRAINER_STATE = "trainer_state"  # save_state name: trainer_state.json (+ .safetensors)
LOCK_FILE = ".plugformer.lock"  # <run dir>/.plugformer.lock, flock-ed by the process writing the run

#: the files every checkpoint that generate/export read holds next to its weights
MODEL_ONLY = (CONFIG_FILE, PLUGINS_FILE, TOKENIZER_DIR)


def last_link(run_dir: str | Path) -> Path:
    """``<run_dir>/checkpoints/last`` (the link itself, not resolved; it may not exist)."""
    return Path(run_dir) / CHECKPOINTS_DIR / LAST


def resolve_checkpoint(path: str | Path) -> Path:
    """What a user's ``checkpoint=PATH`` names: ``PATH`` itself when it holds a model (or is no run
    directory), else the checkpoint a run directory's ``checkpoints/last`` points at.

    Only resolves; :func:`plugformer.checkpoint.check_checkpoint_dir` checks what the directory holds.
    """
    path = Path(path).expanduser()
    last = last_link(path)
    if not (path / MODEL_FILE).is_file() and last.exists():
        return last.resolve()
    return path


__all__ = ["ADAPTER_DIR", "ADAPTER_MARKER_FILE", "CHECKPOINTS_DIR", "CONFIG_FILE", "DCP_DIR", "LAST", "MERGE_FILE",
           "METRICS_FILE", "MODEL_FILE", "MODEL_ONLY", "OPTIMIZER_STATE", "PEFT_CONFIG_FILE", "PEFT_WEIGHTS_FILE",
           "LOCK_FILE", "PLUGINS_FILE", "QUANTIZATION_FILE", "STEP_PREFIX", "SUMMARY_FILE", "TOKENIZER_DIR",
           "TRAINER_STATE", "last_link", "resolve_checkpoint"]
