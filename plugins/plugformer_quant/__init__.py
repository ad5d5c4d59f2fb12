"""Quantizers (family ``quantizer``): ``none``, ``bf16``/``fp16`` casts, ``int8``/``int8_dynamic``
(torchao) and ``nf4`` (bitsandbytes).

Capabilities each declares: ``devices``; ``training`` (True: its weights can still be trained, so
``plugformer train quantizer=...`` accepts it; False: inference only, use ``plugformer quantize`` after
training, or ``adapter=qlora``); ``adapters`` (the adapters it composes with in training).

Registration only: neither torch, torchao nor bitsandbytes is imported here.
"""
from plugformer import hookimpl

plugformer_api = "1.1"  # the plugformer plugin API this package targets

_ANY = ["cpu", "cuda"]


@hookimpl
def plugformer_register(registries):
    q = registries.quantizer
    q.register("none", "plugformer_quant.cast:NoQuantizer", description="keeps the weights as they are (fp32)",
               capabilities={"devices": _ANY, "training": True, "adapters": ["none", "lora", "qlora"]})
    q.register("bf16", "plugformer_quant.cast:BF16", description="casts floating weights to bfloat16 (half the bytes)",
               capabilities={"devices": _ANY, "training": True, "adapters": ["none", "lora"]})
    q.register("fp16", "plugformer_quant.cast:FP16", description="casts floating weights to float16 (half the bytes)",
               capabilities={"devices": _ANY, "training": True, "adapters": ["none", "lora"]})
    q.register("int8", "plugformer_quant.int8:Int8WeightOnly", schema="plugformer_quant.schemas:LinearQuantConfig",
               description="torchao int8 weight-only: Linear weights int8 with one scale per output row",
               capabilities={"devices": _ANY, "training": False, "adapters": []},
               available="plugformer_quant.availability:torchao")
    q.register("int8_dynamic", "plugformer_quant.int8:Int8Dynamic",
               schema="plugformer_quant.schemas:LinearQuantConfig",
               description="torchao int8 weights + per-token dynamic int8 activations (int8 matmuls)",
               capabilities={"devices": _ANY, "training": False, "adapters": []},
               available="plugformer_quant.availability:torchao")
    q.register("nf4", "plugformer_quant.nf4:NF4", schema="plugformer_quant.schemas:NF4Config",
               description="bitsandbytes 4-bit NormalFloat Linear weights (QLoRA's base format)",
               capabilities={"devices": _ANY, "training": False, "adapters": ["qlora"]},
               available="plugformer_quant.availability:bitsandbytes")
