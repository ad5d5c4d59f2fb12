"""Adapters (family ``adapter``): ``none``, ``lora`` (peft) and ``qlora`` (NF4 base via the ``nf4``
quantizer + LoRA).

Capability ``parallel`` lists the strategies an adapter composes with. ``lora`` under ``tp`` is refused:
tensor parallelism shards the plain ``nn.Linear`` layers that LoRA wraps. ``qlora`` under ``fsdp`` is
refused: FSDP2 (``fully_shard``) re-creates each parameter as a DTensor shard, which drops the
``quant_state`` (absmax scales, code book) that a bitsandbytes ``Params4bit`` carries as a Python
attribute, so the gathered 4-bit weight cannot be dequantized ("quant_state is required" in
``matmul_4bit``); bitsandbytes 0.50 has no FSDP2 integration.

Capability ``multi_adapter``: saved ``lora``/``qlora`` adapters load side by side on one full-precision base
and route per batch row (``plugformer.engine.AdapterSet``); a saved qlora adapter loads onto the plain base,
as ``load_adapter`` does.

Registration only: neither torch nor peft is imported here (see ``plugformer_register``).
"""
from plugformer import hookimpl

plugformer_api = "1.1"  # the plugformer plugin API this package targets


@hookimpl
def plugformer_register(registries):
    registries.adapter.register(
        "none", "plugformer_adapt.none:NoAdapter",
        description="no adapter: every parameter trains (full fine-tuning)",
        capabilities={"devices": ["cpu", "cuda"]})
    registries.adapter.register(
        "lora", "plugformer_adapt.lora:LoraAdapter", schema="plugformer_adapt.schemas:LoraConfig",
        description="LoRA via peft on Linear layers chosen by name patterns (rsLoRA, DoRA options); "
                    "saves PEFT's adapter_config.json + adapter_model.safetensors",
        capabilities={"devices": ["cpu", "cuda"], "peft_types": ["LORA"], "parallel": ["single", "ddp", "fsdp"],
                      "multi_adapter": True},
        available="plugformer_adapt.availability:lora")
    registries.adapter.register(
        "qlora", "plugformer_adapt.lora:QLoraAdapter", schema="plugformer_adapt.schemas:QLoraConfig",
        description="QLoRA: target layers quantized to 4-bit NF4 (the nf4 quantizer, bitsandbytes), LoRA on top",
        capabilities={"devices": ["cpu", "cuda"], "parallel": ["single", "ddp"], "multi_adapter": True},
        available="plugformer_adapt.availability:qlora")
