"""Built-in objective, optimizers, schedulers and run callbacks (progress bar, metrics file)."""
from plugformer import hookimpl

_ANY_DEVICE = {"devices": ["cpu", "cuda"]}


@hookimpl
def plugformer_register(registries):
    registries.objective.register(
        "clm", "plugformer_training.objectives:CausalLM", schema="plugformer_training.schemas:CLMConfig",
        description="causal language modelling: predict token t+1 from tokens ≤ t",
        capabilities={**_ANY_DEVICE, "causal": True})
    registries.optimizer.register(
        "adamw", "plugformer_training.optimizers:adamw", schema="plugformer_training.schemas:AdamWConfig",
        description="torch AdamW (fused kernel where torch has one), no decay on norms/biases/embeddings",
        capabilities=_ANY_DEVICE)
    registries.optimizer.register(
        "sgd", "plugformer_training.optimizers:sgd", schema="plugformer_training.schemas:SGDConfig",
        description="torch SGD with momentum / Nesterov", capabilities=_ANY_DEVICE)
    registries.scheduler.register(
        "cosine", "plugformer_training.schedulers:cosine", schema="plugformer_training.schemas:CosineConfig",
        description="linear warmup, then cosine decay to min_lr_ratio × lr", capabilities=_ANY_DEVICE)
    registries.scheduler.register(
        "constant", "plugformer_training.schedulers:constant", schema="plugformer_training.schemas:ConstantConfig",
        description="linear warmup, then a constant learning rate", capabilities=_ANY_DEVICE)
    registries.callback.register(
        "progress", "plugformer_training.callbacks:ProgressBar",
        description="tqdm progress bar: loss, tokens/s, ETA (rank 0 only)")
    registries.callback.register(
        "metrics", "plugformer_training.callbacks:MetricsFile",
        description="one JSON object per log/eval step in <run dir>/metrics.jsonl (rank 0 only)")
