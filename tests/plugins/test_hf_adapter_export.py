"""A user fine-tunes a tiny GPT-2- or Llama-style model with LoRA, exports it to Hugging Face format, and
peft itself loads the exported adapter on the exported base model: the logits match plugformer's with the
adapter unmerged (and merged), for plain LoRA, rsLoRA and DoRA, with grouped-query attention."""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="HF export needs transformers (pip install .[hf])")
peft = pytest.importorskip("peft", reason="LoRA needs peft (pip install .[lora])")

from plugformer.errors import ConfigError
from plugformer.checkpoint import load_model_for_inference
from plugformer_hf.adapter_export import convert_adapter
from plugformer.plugins import load_plugins

TOLERANCE = 1e-4  # float32 logits of a 2-layer model; measured max |diff| ~1e-7
SMALL = ["tokenizer=byte", "model.n_layers=2", "model.d_model=32", "model.n_heads=4", "data.seq_len=32",
         "trainer.batch_size=4", "threads=1", "seed=0"]
#: case -> (model preset + its overrides, LoRA options)
CASES = {
    "gpt2_rslora": (["model=gpt2_tiny"], ["adapter.use_rslora=true"]),
    "llama_gqa": (["model=llama_tiny", "model.n_kv_heads=2"], []),
    "llama_gqa_dora": (["model=llama_tiny", "model.n_kv_heads=2"], ["adapter.use_dora=true", "adapter.alpha=4"]),
}
#: a large learning rate: three steps leave every LoRA B (zero at start) far from zero
LORA = ["data=uppercase", "data.n_train=40", "data.n_val=4", "eval_examples=2", "max_new_tokens=2",
        "adapter=lora", "adapter.r=2", "optimizer.lr=0.05", "scheduler.warmup_steps=0", "trainer.max_steps=3"]


def plugformer(cwd: Path, cache: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PLUGFORMER_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "plugformer", *args], check=False, cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module", params=sorted(CASES))
def tuned(request, cache_dir, tmp_path_factory):
    """(case, base checkpoint, LoRA-fine-tuned checkpoint, work dir): a base trained 1 step, then LoRA."""
    model, lora = CASES[request.param]
    root = tmp_path_factory.mktemp(request.param)
    plugformer(root, cache_dir, "train", *SMALL, *model, "data.max_bytes=100000", "trainer.max_steps=1",
               f"hydra.run.dir={root / 'base'}")
    base = root / "base" / "checkpoints" / "last"
    plugformer(root, cache_dir, "finetune", f"checkpoint={base}", *SMALL[4:], *LORA, *lora,
               f"hydra.run.dir={root / 'lora'}")
    return request.param, base, root / "lora" / "checkpoints" / "last", root


def sample_ids(vocab: int) -> torch.Tensor:
    return torch.randint(0, vocab, (2, 24), generator=torch.Generator().manual_seed(1))


def peft_logits(out: Path, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(base logits, base + adapter logits), both computed by transformers + peft from ``out``."""
    base = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        plain = base(ids).logits.clone()
        adapted = peft.PeftModel.from_pretrained(base, out / "adapter").eval()
        return plain, adapted(input_ids=ids).logits


@pytest.mark.slow
def test_peft_loads_the_exported_adapter_with_plugformers_logits(tuned, cache_dir):
    case, _, lora, root = tuned
    out = root / "hf"
    proc = plugformer(root, cache_dir, "export-hf", f"checkpoint={lora}", f"out={out}")
    assert "and its adapter (" in proc.stdout
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    source = json.loads((lora / "adapter" / "adapter_config.json").read_text())
    assert {k: config[k] for k in ("r", "lora_alpha", "use_rslora", "use_dora")} == \
           {k: source[k] for k in ("r", "lora_alpha", "use_rslora", "use_dora")}
    if case.startswith("gpt2"):
        assert config["fan_in_fan_out"] and "transformer.h.1.attn.c_attn" in config["target_modules"]
    else:
        assert {f"model.layers.0.{m}" for m in ("self_attn.k_proj", "mlp.gate_proj", "mlp.up_proj")} \
               <= set(config["target_modules"])

    ours = load_model_for_inference(lora, load_plugins().registries, device="cpu")
    ids = sample_ids(ours.tokenizer.vocab_size)
    plain, theirs = peft_logits(out, ids)
    with torch.no_grad():
        unmerged = ours.model(ids)
        merged = copy.deepcopy(ours.model).merge_and_unload()(ids)
    effect, diff, diff_merged = (float((a - b).abs().max()) for a, b in
                                 ((plain, unmerged), (theirs, unmerged), (theirs, merged)))
    print(f"\n{case}: adapter moves logits by {effect:.3g}; peft vs plugformer unmerged max |diff| = {diff:.3g}, "
          f"vs merged {diff_merged:.3g}")
    assert effect > 1e-2  # the adapter is far from a no-op, so a misplaced row would show
    assert diff < TOLERANCE and diff_merged < TOLERANCE


@pytest.mark.slow
def test_a_plain_base_exports_with_an_adapter_dir(tuned, cache_dir):
    case, base, lora, root = tuned
    if case != "llama_gqa":
        pytest.skip("one case covers adapter=DIR")
    out = root / "hf-base"
    plugformer(root, cache_dir, "export-hf", f"checkpoint={base}", f"adapter={lora / 'adapter'}", f"out={out}")
    ours = load_model_for_inference(base, load_plugins().registries, adapter=lora / "adapter", device="cpu")
    ids = sample_ids(ours.tokenizer.vocab_size)
    with torch.no_grad():
        diff = float((peft_logits(out, ids)[1] - ours.model(ids)).abs().max())
    print(f"\n{case}: base + adapter=DIR, peft vs plugformer max |diff| = {diff:.3g}")
    assert diff < TOLERANCE

    refused = plugformer(root, cache_dir, "export-hf", f"checkpoint={lora}", f"adapter={lora / 'adapter'}",
                         f"out={root / 'x'}", check=False)
    assert refused.returncode == 2 and "needs a plain base checkpoint" in refused.stderr
    assert refused.stderr.count("\n") == 1 and not (root / "x").exists()
    qlora = root / "qlora"
    shutil.copytree(lora, qlora)
    (qlora / "config.yaml").write_text((qlora / "config.yaml").read_text().replace(
        "adapter:\n  name: lora", "adapter:\n  name: qlora"))
    refused = plugformer(root, cache_dir, "export-hf", f"checkpoint={qlora}", f"out={root / 'y'}", check=False)
    assert refused.returncode == 2 and "trained with adapter 'qlora'" in refused.stderr
    assert not (root / "y").exists()


LLAMA = {"model_type": "llama", "hidden_size": 8, "num_key_value_heads": 1, "head_dim": 2}


def test_targets_without_a_hugging_face_counterpart_are_refused_by_name(tmp_path):
    tensors = {"base_model.model.lm_head.lora_A.weight": torch.zeros(2, 8),
               "base_model.model.lm_head.lora_B.weight": torch.zeros(50, 2)}
    with pytest.raises(ConfigError, match="adapter target\\(s\\) lm_head have no Hugging Face counterpart"):
        convert_adapter(LLAMA, {"peft_type": "LORA", "target_modules": ["lm_head"]}, tensors, tmp_path)
    with pytest.raises(ConfigError, match="trains biases \\(bias='all'\\)"):
        convert_adapter(LLAMA, {"peft_type": "LORA", "bias": "all"}, tensors, tmp_path)
    with pytest.raises(ConfigError, match="PEFT type 'IA3'; exportable: LORA"):
        convert_adapter(LLAMA, {"peft_type": "IA3"}, tensors, tmp_path)


def test_fused_qkv_and_gate_up_split_into_the_rows_the_base_export_gives_each_part(tmp_path):
    a, qkv_b, gate_up_b = torch.randn(2, 8), torch.arange(12.0)[:, None].expand(12, 2), torch.randn(6, 2)
    tensors = {"base_model.model.blocks.0.attn.qkv.lora_A.weight": a,
               "base_model.model.blocks.0.attn.qkv.lora_B.weight": qkv_b,
               "base_model.model.blocks.0.mlp.proj_in.lora_A.weight": a,
               "base_model.model.blocks.0.mlp.proj_in.lora_B.weight": gate_up_b}
    config, out = convert_adapter(LLAMA, {"peft_type": "LORA", "target_modules": ["blocks.0.attn.qkv"]}, tensors,
                                  tmp_path)
    p = "base_model.model.model.layers.0."
    assert out[p + "self_attn.q_proj.lora_B.weight"][:, 0].tolist() == list(range(8))
    assert out[p + "self_attn.k_proj.lora_B.weight"][:, 0].tolist() == [8, 9]
    assert out[p + "self_attn.v_proj.lora_B.weight"][:, 0].tolist() == [10, 11]
    assert torch.equal(out[p + "mlp.gate_proj.lora_B.weight"], gate_up_b[0::2])
    assert torch.equal(out[p + "mlp.up_proj.lora_B.weight"], gate_up_b[1::2])
    assert all(torch.equal(out[p + f"{m}.lora_A.weight"], a) for m in ("self_attn.q_proj", "mlp.up_proj"))
    assert config["task_type"] == "CAUSAL_LM" and not config["fan_in_fan_out"]
