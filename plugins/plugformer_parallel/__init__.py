"""Built-in parallel strategies: one process, torch DDP, FSDP2 and tensor parallel under torchrun."""
from plugformer import hookimpl


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
