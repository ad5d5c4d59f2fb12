"""Built-in objective, optimizers, schedulers and run callbacks (progress bar, metrics file).

Registration only: no torch import here (see ``plugformer_register``).
"""
from plugformer import hookimpl

plugformer_api = "1.1"  # the plugformer plugin API this package targets

_ANY_DEVICE = {"devices": ["cpu", "cuda"]}


def _objectives(registries) -> None:
    registries.objective.register(
        "clm", "plugformer_training.objectives:CausalLM", schema="plugformer_training.schemas:CLMConfig",
        description="causal language modelling: predict token t+1 from tokens ≤ t",
        capabilities={**_ANY_DEVICE, "causal": True})
    registries.objective.register(
        "mlm", "plugformer_training.mlm:MaskedLM", schema="plugformer_training.schemas:MLMConfig",
        description="masked language modelling (BERT 80/10/10); bidirectional attention; logs masked_accuracy",
        capabilities={**_ANY_DEVICE, "causal": False})
    registries.objective.register(
        "sft", "plugformer_training.sft:SupervisedLM", schema="plugformer_training.schemas:SFTConfig",
        description="supervised fine-tuning: causal LM loss on response tokens only (prompt masked)",
        capabilities={**_ANY_DEVICE, "causal": True})
    registries.objective.register(
        "distill", "plugformer_training.distill:Distillation", schema="plugformer_training.schemas:DistillConfig",
        description="KL to a frozen teacher checkpoint's logits at a temperature, optionally mixed with CE",
        capabilities={**_ANY_DEVICE, "causal": True})
    registries.objective.register(
        "dpo", "plugformer_training.dpo:DirectPreference", schema="plugformer_training.schemas:DPOConfig",
        description="direct preference optimisation on prompt/chosen/rejected pairs against a frozen reference",
        capabilities={**_ANY_DEVICE, "causal": True, "batches": ["preference"]})
    registries.objective.register(
        "contrastive", "plugformer_training.contrastive:Contrastive",
        schema="plugformer_training.schemas:ContrastiveConfig",
        description="InfoNCE bi-encoder on query/positive[/negative] pairs, in-batch negatives, pooled hidden states",
        capabilities={**_ANY_DEVICE, "causal": True, "batches": ["pairs"]})


def _optimizers(registries) -> None:
    registries.optimizer.register(
        "adamw", "plugformer_training.optimizers:adamw", schema="plugformer_training.schemas:AdamWConfig",
        description="torch AdamW (fused kernel where torch has one), no decay on norms/biases/embeddings",
        capabilities=_ANY_DEVICE)
    registries.optimizer.register(
        "adam", "plugformer_training.optimizers:adam", schema="plugformer_training.schemas:AdamConfig",
        description="torch Adam with L2 weight decay (fused kernel where torch has one)",
        capabilities=_ANY_DEVICE)
    registries.optimizer.register(
        "sgd", "plugformer_training.optimizers:sgd", schema="plugformer_training.schemas:SGDConfig",
        description="torch SGD with momentum / Nesterov", capabilities=_ANY_DEVICE)
    registries.optimizer.register(
        "adafactor", "plugformer_training.optimizers:adafactor", schema="plugformer_training.schemas:AdafactorConfig",
        description="torch Adafactor: factored second moments, small optimizer state (torch ≥ 2.5)",
        capabilities=_ANY_DEVICE, available="plugformer_training.availability:adafactor")


def _schedulers(registries) -> None:
    registries.scheduler.register(
        "cosine", "plugformer_training.schedulers:cosine", schema="plugformer_training.schemas:CosineConfig",
        description="linear warmup, then cosine decay to min_lr_ratio × lr", capabilities=_ANY_DEVICE)
    registries.scheduler.register(
        "linear", "plugformer_training.schedulers:linear", schema="plugformer_training.schemas:LinearConfig",
        description="linear warmup, then linear decay to min_lr_ratio × lr", capabilities=_ANY_DEVICE)
    registries.scheduler.register(
        "wsd", "plugformer_training.schedulers:wsd", schema="plugformer_training.schemas:WSDConfig",
        description="warmup, constant, then decay over the last decay_fraction of steps (warmup-stable-decay)",
        capabilities=_ANY_DEVICE)
    registries.scheduler.register(
        "constant", "plugformer_training.schedulers:constant", schema="plugformer_training.schemas:ConstantConfig",
        description="linear warmup, then a constant learning rate", capabilities=_ANY_DEVICE)


def _callbacks(registries) -> None:
    registries.callback.register(
        "progress", "plugformer_training.callbacks:ProgressBar",
        description="tqdm progress bar: loss, tokens/s, ETA (rank 0 only)")
    registries.callback.register(
        "metrics", "plugformer_training.callbacks:MetricsFile",
        description="one JSON object per log/eval step in <run dir>/metrics.jsonl (rank 0 only)")
    registries.callback.register(
        "tensorboard", "plugformer_training.tensorboard:TensorBoardLogger",
        description="TensorBoard event files in <run dir>/tensorboard: train/* and val/* scalars (rank 0 only)",
        available="plugformer_training.tensorboard:availability")


def _records(registries) -> None:
    registries.data.register(
        "jsonl", "plugformer_training.records:JsonlRecords", schema="plugformer_training.schemas:JsonlRecordsConfig",
        description="fine-tuning records from a .jsonl file: prompt/response, chat messages or preference pairs",
        capabilities={})


@hookimpl
def plugformer_register(registries):
    _objectives(registries)
    _records(registries)
    _optimizers(registries)
    _schedulers(registries)
    _callbacks(registries)
