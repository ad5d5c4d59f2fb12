"""Typed top-level configs. Component nodes (``attention``, ``optimizer``, ...) are typed by the schema
of the implementation they name, stored by :mod:`plugformer.config.store`."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from omegaconf import MISSING

from plugformer.families import CONFIG_GROUPS
from plugformer.config.ranges import bounded

SCHEMA_VERSION = 1

#: config groups whose option names a registry entry of the same family (see plugformer.families)
COMPONENT_GROUPS = CONFIG_GROUPS
#: families a train config may choose as a config group but need not (``null`` by default): ``retriever=faiss``
#: measures the trained model as a retrieval embedder after the last step (plugformer.training.retrieval_eval)
OPTIONAL_GROUPS: tuple[str, ...] = ("retriever",)


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"


class OnNonFinite(str, Enum):
    """``trainer.on_nonfinite``: a NaN/inf loss stops the run (exit 2) or its update is skipped."""

    stop = "stop"
    skip = "skip"


@dataclass
class ModelConfig:
    """Sizes of the transformer; the vocabulary size comes from the tokenizer."""

    n_layers: int = bounded(4, ge=1)
    d_model: int = bounded(256, ge=1)
    n_heads: int = bounded(4, ge=1)
    n_kv_heads: Optional[int] = bounded(None, ge=1)  # None: same as n_heads; fewer: grouped-query attention
    max_seq_len: Optional[int] = bounded(None, ge=1)  # None: data.seq_len
    dropout: float = bounded(0.0, ge=0, lt=1)
    bias: bool = True
    tie_embeddings: bool = True
    init_std: float = bounded(0.02, ge=0)
    # per-layer layouts: each item maps attention/norm/mlp to options merged onto that group's node
    # (or, with a different ``name``, a different implementation). ``layer_pattern`` repeats over the
    # layers (e.g. alternate local and global attention); ``layer_overrides`` targets layers by index
    # (-1 is the last) and wins over the pattern.
    # (typed Any: Hydra overrides may then set them whole; validate checks their shape)
    layer_pattern: Any = None  # list of {family: options}
    layer_overrides: Any = None  # {layer index: {family: options}}


@dataclass
class TrainerConfig:
    """The training loop. ``batch_size`` is the global batch (split across data-parallel ranks)."""

    max_steps: int = bounded(200, ge=1)
    batch_size: int = bounded(16, ge=1)
    grad_accum: int = bounded(1, ge=1)
    grad_clip: float = bounded(1.0, ge=0)  # 0 disables clipping
    log_every: int = bounded(10, ge=1)
    eval_every: int = bounded(100, ge=0)  # 0: evaluate only at the end
    eval_batches: int = bounded(4, ge=1)
    save_every: int = bounded(100, ge=0)  # 0: save only at the end
    keep_last: int = bounded(2, ge=0)  # 0 keeps every checkpoint
    callbacks: list[str] = field(default_factory=lambda: ["progress", "metrics"])
    # recompute transformer blocks' activations in backward (less memory, ~1/3 more compute): true (every
    # block), false, N (every N-th block: 0, N, 2N, ...) or a list of block indices
    activation_checkpointing: Any = False
    # a NaN/inf loss: stop (exit 2, naming the step; nothing of it is saved) or skip that step's update
    on_nonfinite: OnNonFinite = OnNonFinite.stop


@dataclass
class LauncherConfig:
    """``launcher.nproc=N``: the CLI starts N ranks on this machine itself (torch's elastic agent,
    standalone rendezvous), so a one-machine distributed run needs no torchrun. Consumed by the CLI."""

    nproc: int = bounded(1, ge=1)


@dataclass
class TrainConfig:
    """``plugformer train``: every component group plus the model, trainer and run switches."""

    schema_version: int = bounded(SCHEMA_VERSION, ge=1, le=SCHEMA_VERSION)
    tokenizer: Any = MISSING
    attention: Any = MISSING
    position: Any = MISSING
    norm: Any = MISSING
    mlp: Any = MISSING
    objective: Any = MISSING
    optimizer: Any = MISSING
    scheduler: Any = MISSING
    parallel: Any = MISSING
    data: Any = MISSING
    adapter: Any = MISSING  # model transform at Stage.ADAPT (LoRA, ...); `none` trains the full model
    quantizer: Any = MISSING  # model transform at Stage.QUANTIZE (casts); `none` keeps fp32 weights
    retriever: Any = None  # faiss | bm25 | hybrid | ...: recall@1/10, MRR@10 on the data's held-out pairs at the end
    model: ModelConfig = field(default_factory=ModelConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    precision: Precision = Precision.fp32
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = bounded(0, ge=0)
    resume: bool = False
    overwrite: bool = False  # replace a previous run in the run directory (otherwise: resume=true or refused)
    threads: Optional[int] = bounded(None, ge=1)  # torch intra-op threads; None: torch's default
    compile: bool = False  # torch.compile each transformer block
    compile_backend: str = "inductor"  # torch.compile backend (inductor | aot_eager | eager | ...)
    launcher: LauncherConfig = field(default_factory=LauncherConfig)


@dataclass
class GenerateConfig:
    """``plugformer generate``: sample from a checkpoint directory."""

    checkpoint: str = MISSING
    # an adapter directory (e.g. <checkpoint>/adapter) applied unmerged. On the command line it is
    # spelled ``adapter=DIR``: ``adapter`` is also a config group of train, so the CLI renames it.
    adapter_dir: Optional[str] = None
    prompt: str = ""
    max_new_tokens: int = bounded(64, ge=1)  # prompt + new tokens must fit the model's context
    temperature: float = bounded(0.8, ge=0)  # 0: greedy
    top_k: Optional[int] = bounded(None, ge=0)  # None or 0: no top-k filter
    top_p: Optional[float] = bounded(None, gt=0, le=1)  # None or 1: no nucleus filter
    seed: int = bounded(0, ge=0)
    device: str = "auto"
    precision: Precision = Precision.fp32
    num_samples: int = bounded(1, ge=1)
    # the inference engine (docs/inference.md): more sampling rules, offline batches, beams, speculation
    min_p: float = bounded(0.0, ge=0, le=1)
    repetition_penalty: float = bounded(1.0, gt=0)
    presence_penalty: float = bounded(0.0, ge=-2, le=2)
    frequency_penalty: float = bounded(0.0, ge=-2, le=2)
    stop: list = field(default_factory=list)  # stop strings (backslash escapes such as \n are decoded)
    ignore_eos: bool = False
    prompts: Optional[str] = None  # a .jsonl file ({"prompt": ...} per line) or a text file (one prompt per line)
    out: Optional[str] = None  # with prompts=: write one JSON line per prompt here (never replaces a file)
    num_beams: int = bounded(1, ge=1)  # > 1: beam search (greedy; temperature is ignored)
    length_penalty: float = bounded(1.0, ge=-100, le=100)  # beams: score / length ** length_penalty
    early_stopping: bool = False
    draft: Optional[str] = None  # a draft checkpoint with the same tokenizer: speculative decoding
    num_speculative_tokens: int = bounded(4, ge=1)
    max_batch: int = bounded(64, ge=1)
    kv_cache_tokens: Optional[int] = bounded(None, ge=1)


@dataclass
class ChatTemplateConfig:
    """How fine-tuning records become text (``template=plain|chatml`` presets, or set each key).
    ``{content}`` in ``system``/``user`` is the message; an assistant turn is ``assistant_start`` +
    content + ``assistant_end``, and the model learns content, ``assistant_end`` and the final eos."""

    system: str = "{content}\n"
    user: str = "{content}"
    assistant_start: str = ""
    assistant_end: str = ""


@dataclass
class FinetuneConfig:
    """``plugformer finetune``: continue a checkpoint on records (``data``) with an ``objective``
    (sft, distill, dpo, ...), fully or through an ``adapter``; exact match on the held-out split
    before and after."""

    schema_version: int = bounded(SCHEMA_VERSION, ge=1, le=SCHEMA_VERSION)
    checkpoint: str = MISSING  # the plugformer checkpoint to start from (model + tokenizer)
    objective: Any = MISSING
    optimizer: Any = MISSING
    scheduler: Any = MISSING
    parallel: Any = MISSING
    data: Any = MISSING  # a records source: a task (addition, reverse, ...) or jsonl (data=<file.jsonl>)
    adapter: Any = MISSING
    quantizer: Any = MISSING
    template: ChatTemplateConfig = field(default_factory=ChatTemplateConfig)
    packing: bool = False  # pack several records per row (attention is not reset between them)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval_examples: int = bounded(200, ge=0)  # held-out records scored by exact match (greedy decoding)
    max_new_tokens: int = bounded(32, ge=1)  # longest greedy completion when scoring
    keep_sparsity: bool = True  # a pruned checkpoint's zero weights stay zero (their gradients are masked)
    precision: Precision = Precision.fp32
    device: str = "auto"
    seed: int = bounded(0, ge=0)
    resume: bool = False
    overwrite: bool = False  # replace a previous run in the run directory (otherwise: resume=true or refused)
    threads: Optional[int] = bounded(None, ge=1)
