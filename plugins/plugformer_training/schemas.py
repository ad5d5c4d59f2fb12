"""Config schemas of the built-in training components (torch-free, so configs compose without torch)."""
from dataclasses import dataclass, field
from enum import Enum
from typing import List, Optional

from plugformer.config import bounded


class ParamKind(str, Enum):
    """Parameter kinds an optimizer's ``no_decay`` list can exempt from weight decay."""

    norm = "norm"            # parameters of *Norm* modules, and any 1-D ``*weight``
    bias = "bias"            # 1-D ``*bias`` parameters
    embedding = "embedding"  # nn.Embedding weights (and an LM head tied to one)


class DecayShape(str, Enum):
    """How a schedule falls from the peak to ``min_lr_ratio``."""

    linear = "linear"
    cosine = "cosine"


def _default_no_decay() -> List[ParamKind]:
    return [ParamKind.norm, ParamKind.bias, ParamKind.embedding]


@dataclass
class CLMConfig:
    label_smoothing: float = bounded(0.0, ge=0, le=1)


@dataclass
class AdamWConfig:
    lr: float = bounded(1e-3, gt=0)
    betas: List[float] = bounded(default_factory=lambda: [0.9, 0.95], ge=0, lt=1)
    eps: float = bounded(1e-8, ge=0)
    weight_decay: float = bounded(0.1, ge=0)  # decoupled (AdamW)
    fused: Optional[bool] = None  # None: use the fused kernel when torch offers it for the device
    no_decay: List[ParamKind] = field(default_factory=_default_no_decay)  # kinds with weight_decay 0


@dataclass
class AdamConfig:
    lr: float = bounded(1e-3, gt=0)
    betas: List[float] = bounded(default_factory=lambda: [0.9, 0.999], ge=0, lt=1)
    eps: float = bounded(1e-8, ge=0)
    weight_decay: float = bounded(0.0, ge=0)  # L2 penalty added to the gradient (not decoupled: use adamw for that)
    fused: Optional[bool] = None  # None: use the fused kernel when torch offers it for the device
    no_decay: List[ParamKind] = field(default_factory=_default_no_decay)


@dataclass
class SGDConfig:
    lr: float = bounded(0.1, gt=0)
    momentum: float = bounded(0.9, ge=0)
    nesterov: bool = False  # needs momentum > 0
    weight_decay: float = bounded(0.0, ge=0)
    no_decay: List[ParamKind] = field(default_factory=_default_no_decay)


@dataclass
class AdafactorConfig:
    lr: float = bounded(1e-2, gt=0)
    beta2_decay: float = bounded(-0.8, le=0)  # second-moment decay: β2 at step t = 1 - t^beta2_decay
    eps: List[Optional[float]] = bounded(default_factory=lambda: [None, 1e-3], ge=0)  # [ε1 (None: dtype eps), ε2]
    d: float = bounded(1.0, ge=1)  # update clipping threshold
    weight_decay: float = bounded(0.0, ge=0)  # decoupled
    no_decay: List[ParamKind] = field(default_factory=_default_no_decay)


@dataclass
class CosineConfig:
    warmup_steps: int = bounded(20, ge=0)
    min_lr_ratio: float = bounded(0.1, ge=0, le=1)


@dataclass
class LinearConfig:
    warmup_steps: int = bounded(20, ge=0)
    min_lr_ratio: float = bounded(0.0, ge=0, le=1)


@dataclass
class WSDConfig:
    warmup_steps: int = bounded(20, ge=0)
    decay_fraction: float = bounded(0.2, ge=0, le=1)  # the last decay_fraction × max_steps steps decay
    min_lr_ratio: float = bounded(0.0, ge=0, le=1)
    decay_shape: DecayShape = DecayShape.linear


@dataclass
class ConstantConfig:
    warmup_steps: int = bounded(0, ge=0)


@dataclass
class MLMConfig:
    mask_fraction: float = bounded(0.15, gt=0, le=1)  # share of positions selected for prediction
    replace_mask: float = bounded(0.8, ge=0, le=1)  # of the selected: replaced by <mask> ...
    replace_random: float = bounded(0.1, ge=0, le=1)  # ... by a random token (the rest stay unchanged)
    eval_seed: int = bounded(1234, ge=0)  # fixed masks for evaluation, so validation numbers are comparable


@dataclass
class SFTConfig:
    label_smoothing: float = bounded(0.0, ge=0, le=1)


@dataclass
class DistillConfig:
    teacher: str = "???"  # a plugformer checkpoint directory (same tokenizer as the student)
    temperature: float = bounded(2.0, gt=0)  # softens both distributions; the KL term is scaled by temperature²
    # loss = alpha · KL(teacher ‖ student) + (1 - alpha) · cross-entropy on the targets
    alpha: float = bounded(1.0, ge=0, le=1)


@dataclass
class DPOConfig:
    beta: float = bounded(0.1, gt=0)  # strength of the implicit KL constraint to the reference model
    reference: Optional[str] = None  # checkpoint directory; None: a frozen copy of the policy at its first step
    label_smoothing: float = bounded(0.0, ge=0, lt=0.5)  # conservative DPO: assumed share of flipped preference labels


class PoolingKind(str, Enum):
    """How the contrastive objective pools a text's hidden states (:data:`plugformer.retrieval.POOLINGS`)."""

    mean = "mean"  # the mean of the real tokens' final-norm states
    last = "last"  # the last real token's state (what a causal model has read the whole text at)


@dataclass
class ContrastiveConfig:
    # similarities (cosines) are divided by it before the softmax; with learn_temperature its starting value
    temperature: float = bounded(0.05, gt=0, le=10)
    # learn the temperature with the model (CLIP-style: a log logit scale, its scale capped at 100, i.e. the
    # temperature floored at 0.01); saved with the training state, not in the model checkpoint; parallel=single only
    learn_temperature: bool = False
    pooling: PoolingKind = PoolingKind.mean  # the pooled embedder reads this key back from the checkpoint
    symmetric: bool = False  # also each positive → its query among the batch's queries; the loss is the mean


@dataclass
class JsonlRecordsConfig:
    # records: {"prompt","response"} | {"messages":[...]} | {"prompt","chosen","rejected"} | {"query","positive"}
    path: str = "???"
    val_path: Optional[str] = None  # held-out records file; None: hold out val_fraction of the prompts
    val_fraction: float = bounded(0.1, ge=0, lt=1)
