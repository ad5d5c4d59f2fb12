"""Built-in parallel strategies: one process, torch DDP, FSDP2, tensor parallel and 2-D (FSDP2 × TP)
under torchrun."""
from plugformer import hookimpl

plugformer_api = "1.1"  # the plugformer plugin API this package targets


@hookimpl
def plugformer_register(registries):
    registries.parallel.register(
        "single", "plugformer_parallel.single:SingleProcess", schema="plugformer_parallel.schemas:SingleConfig",
        description="one process, one device", capabilities={"devices": ["cpu", "cuda"]})
    registries.parallel.register(
        "ddp", "plugformer_parallel.ddp:DistributedDataParallelStrategy",
        schema="plugformer_parallel.schemas:DDPConfig",
        description="torch DDP: a full replica per rank, gradients all-reduced (run under torchrun)",
        capabilities={"devices": ["cpu", "cuda"], "distributed": True})
    registries.parallel.register(
        "fsdp", "plugformer_parallel.fsdp:FullyShardedDataParallelStrategy",
        schema="plugformer_parallel.schemas:FSDPConfig",
        description="torch FSDP2 (fully_shard per block): params, grads and optimizer state sharded "
                    "across ranks; sharded DCP checkpoints plus a consolidated model (run under torchrun)",
        capabilities={"devices": ["cpu", "cuda"], "distributed": True})
    registries.parallel.register(
        "tp", "plugformer_parallel.tp:TensorParallelStrategy",
        schema="plugformer_parallel.schemas:TPConfig",
        description="tensor parallel (Megatron-style, DTensor): attention heads and MLP hidden units split "
                    "across all ranks, one model replica (every rank sees the same batch); sharded DCP "
                    "checkpoints plus a consolidated model (run under torchrun)",
        capabilities={"devices": ["cpu", "cuda"], "distributed": True, "tensor_parallel": True})
    registries.parallel.register(
        "fsdp_tp", "plugformer_parallel.fsdp_tp:FSDPTensorParallelStrategy",
        schema="plugformer_parallel.schemas:FSDPTPConfig",
        description="2-D parallel on a (dp, tp) device mesh: tensor parallel over parallel.tp ranks inside each "
                    "replica, FSDP2 across the world/tp replicas; sharded DCP checkpoints plus a consolidated "
                    "model (run under torchrun)",
        capabilities={"devices": ["cpu", "cuda"], "distributed": True, "tensor_parallel": True})
    registries.parallel.register(
        "deepspeed", "plugformer_parallel.deepspeed:DeepSpeedStrategy",
        schema="plugformer_parallel.schemas:DeepSpeedConfig",
        description="DeepSpeed ZeRO stage 1/2/3 (parallel.stage) with plugformer's optimizer and scheduler; "
                    "consolidated model.safetensors plus per-rank ZeRO optimizer partitions (run under torchrun)",
        capabilities={"devices": ["cpu", "cuda"], "distributed": True},
        available="plugformer_parallel.availability:deepspeed")
