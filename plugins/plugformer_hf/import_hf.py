"""A local Hugging Face model directory (GPT-2 or Llama family) → a plugformer checkpoint directory.

The result has the trainer's checkpoint layout (``config.yaml``, ``model.safetensors``, ``plugins.json``,
``tokenizer/``), so ``plugformer generate checkpoint=DIR`` and ``plugformer eval checkpoint=DIR`` read
it like any other; ``hf_import.json`` records where it came from. Only safetensors weights are read
(never pickle), transformers is not needed, and the directory is written atomically.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plugformer import ConfigError
from plugformer_hf.hf_mapping import ImportPlan, plan_from_hf_config, state_from_hf

CONFIG = "config.json"
HF_WEIGHTS_FILE = "model.safetensors"  # Hugging Face's layout, not plugformer's (same name by convention)
WEIGHTS_INDEX = "model.safetensors.index.json"
TOKENIZER = "tokenizer.json"
RECORD = "hf_import.json"
DEFAULT_SEQ_LEN = 128  # data.seq_len of the written config (training/eval windows), capped by the context


@dataclass
class ImportResult:
    """What :func:`import_hf` wrote."""

    out: Path
    family: str
    n_params: int
    vocab_size: int
    components: dict[str, str]
    seconds: float


def read_hf_config(src: Path) -> dict[str, Any]:
    path = src / CONFIG
    if not path.is_file():
        raise ConfigError(f"'{src}' is not a Hugging Face model directory (no {CONFIG} in it)")
    return json.loads(path.read_text(encoding="utf-8"))


def read_hf_weights(src: Path) -> dict[str, Any]:
    """Every tensor of ``model.safetensors`` (or of the shards its index lists)."""
    from safetensors.torch import load_file

    if (src / HF_WEIGHTS_FILE).is_file():
        return load_file(str(src / HF_WEIGHTS_FILE))
    if (src / WEIGHTS_INDEX).is_file():
        shards = sorted(set(json.loads((src / WEIGHTS_INDEX).read_text())["weight_map"].values()))
        state: dict[str, Any] = {}
        for shard in shards:
            state.update(load_file(str(src / shard)))
        return state
    pickled = [p.name for p in src.glob("*.bin")]
    hint = f" ({', '.join(pickled)} is a pickle, which plugformer never loads: re-save it with " \
           "save_pretrained(dir, safe_serialization=True))" if pickled else ""
    raise ConfigError(f"'{src}' has no {HF_WEIGHTS_FILE}{hint}")


def compose_config(plan: ImportPlan, src: Path, eos_token: str | None, host: Any) -> Any:
    """The full train config of the imported model: the plan's groups composed, then its values set."""
    from omegaconf import OmegaConf

    from plugformer.config import compose_checked, quote_free_text, validate_train

    groups = ["tokenizer=hf", "objective=clm", "attention=sdpa", *(f"{g}={n}" for g, n in plan.groups.items())]
    cfg = compose_checked("train", [*groups, *quote_free_text([f"tokenizer.path={src.resolve()}"],
                                                              ("tokenizer.path",))], host)
    for key, value in plan.values.items():
        OmegaConf.update(cfg, key, value, merge=False)
    OmegaConf.update(cfg, "tokenizer.eos_token", eos_token, merge=False)
    OmegaConf.update(cfg, "data.seq_len", min(DEFAULT_SEQ_LEN, int(plan.values["model.max_seq_len"])), merge=False)
    validate_train(cfg, host.registries)
    return cfg


def _eos_token(src: Path, eos_id: int | None) -> str | None:
    """The text of the config's eos id in ``tokenizer.json`` (None: let the tokenizer find it by name)."""
    from tokenizers import Tokenizer

    if eos_id is None:
        return None
    return Tokenizer.from_file(str(src / TOKENIZER)).id_to_token(eos_id)


def import_hf(src: str | Path, out: str | Path, host: Any = None) -> ImportResult:
    """Convert the HF model in ``src`` into the plugformer checkpoint directory ``out`` (must not exist)."""
    import torch

    from plugformer.build import build
    from plugformer.checkpoint import PLUGINS_FILE, check_new_dir, write_model_checkpoint
    from plugformer.config import prepare
    from plugformer.model import build_model

    started = time.perf_counter()
    src, out = Path(src).expanduser(), Path(out).expanduser()
    check_new_dir(out)  # refused before anything is read
    plan = plan_from_hf_config(read_hf_config(src))
    if not (src / TOKENIZER).is_file():
        raise ConfigError(f"'{src}' has no {TOKENIZER} (import-hf needs the model's tokenizer in HF tokenizers "
                          "format)")
    host = host or prepare()
    cfg = compose_config(plan, src, _eos_token(src, plan.eos_token_id), host)
    tokenizer = build(host.registries, "tokenizer", cfg.tokenizer)
    vocab = int(read_hf_config(src)["vocab_size"])
    if tokenizer.vocab_size != vocab:
        raise ConfigError(f"config.json vocab_size={vocab} differs from the {TOKENIZER} vocabulary "
                          f"({tokenizer.vocab_size} tokens); plugformer sizes the embedding by the tokenizer")
    state = state_from_hf(plan, read_hf_weights(src), host.registries)
    with torch.device("cpu"):
        model = build_model(cfg, host.registries, vocab)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigError(f"the mapped weights do not fit the plugformer model (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]})")
    components = {g: str(cfg[g].name) for g in ("position", "norm", "mlp", "attention", "tokenizer")}
    write_model_checkpoint(out, cfg, model.state_dict(), tokenizer=tokenizer, records={
        PLUGINS_FILE: host.manifest(),
        RECORD: {"source": str(src.resolve()), "family": plan.family, "components": components}})
    return ImportResult(out, plan.family, model.num_params(), vocab, components, time.perf_counter() - started)
