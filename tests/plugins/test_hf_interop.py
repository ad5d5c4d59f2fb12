"""Hugging Face interop, as a user would check it: tiny random GPT-2 and Llama models made with
transformers (no downloads) are imported, give transformers' logits and greedy continuations, and export
back to directories transformers loads with the same logits."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="HF interop tests need transformers (pip install .[hf])")

from plugformer.generation import Generator, Sampling
from plugformer_hf.export_hf import export_hf
from plugformer_hf.import_hf import import_hf
from plugformer.plugins import load_plugins

EOS = "<|endoftext|>"
CORPUS = ["the quick brown fox jumps over the lazy dog. " * 8, "def main():\n    return 1\n" * 8,
          "hello world, hello plugformer and transformers. " * 8]
TOLERANCE = 1e-4  # float32 logits of a 2-layer model: the measured max abs difference is ~1e-7

#: case -> (family, config overrides): GQA, untied heads, exact gelu, biases, tied Llama, linear rope scaling
CASES = {
    "gpt2": ("gpt2", {}),
    "gpt2_exact_gelu_untied": ("gpt2", {"activation_function": "gelu", "tie_word_embeddings": False,
                                        "layer_norm_epsilon": 1e-6}),
    "llama_gqa": ("llama", {"num_key_value_heads": 2, "rope_theta": 500000.0}),
    "llama_mqa_tied_bias_linear_rope": ("llama", {"num_key_value_heads": 1, "tie_word_embeddings": True,
                                                  "attention_bias": True, "mlp_bias": True,
                                                  "rope_scaling": {"rope_type": "linear", "factor": 2.0}}),
}


def train_tokenizer(directory: Path):
    """A byte-level BPE ``tokenizer.json`` (300 ids, ``<|endoftext|>`` = 0) fitted on a few sentences."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=[EOS],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(directory / "tokenizer.json"))
    return tok


def tiny_hf_model(directory: Path, family: str, **overrides):
    """A random 2-layer model of ``family`` saved with ``save_pretrained`` next to a fitted tokenizer.json.

    Every parameter (biases and norm weights included) is perturbed, so a misplaced tensor shows in the
    logits."""
    directory.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(directory)
    vocab, eos = tok.get_vocab_size(), tok.token_to_id(EOS)
    common = {"vocab_size": vocab, "bos_token_id": eos, "eos_token_id": eos}
    if family == "gpt2":
        config = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64, **common, **overrides)
    else:
        config = transformers.LlamaConfig(hidden_size=32, intermediate_size=40, num_hidden_layers=2,
                                          num_attention_heads=4, max_position_embeddings=64, rms_norm_eps=1e-5,
                                          **common, **overrides)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    model.save_pretrained(directory)
    return model, tok


@pytest.fixture(scope="module", params=sorted(CASES))
def imported(request, tmp_path_factory):
    """(case, the HF model, its tokenizer, the imported plugformer Generator, the checkpoint dir)."""
    family, overrides = CASES[request.param]
    root = tmp_path_factory.mktemp(request.param)
    hf_model, tok = tiny_hf_model(root / "hf", family, **overrides)
    result = import_hf(root / "hf", root / "plugformer")
    assert result.family == family
    gen = Generator.from_checkpoint(result.out, load_plugins().registries, device="cpu")
    return request.param, hf_model, tok, gen, result.out


def sample_ids(vocab: int) -> torch.Tensor:
    return torch.randint(0, vocab, (2, 48), generator=torch.Generator().manual_seed(1))


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def test_imported_model_gives_transformers_logits(imported):
    case, hf_model, tok, gen, _ = imported
    ids = sample_ids(tok.get_vocab_size())
    with torch.no_grad():
        ours, theirs = gen.model(ids), hf_model(ids).logits
    diff = max_diff(ours, theirs)
    print(f"\n{case}: import max |logit diff| = {diff:.3g} (logits up to {float(theirs.abs().max()):.2f})")
    assert float(theirs.std()) > 0.5  # the logits are far from trivially small
    assert diff < TOLERANCE


def test_imported_model_decodes_greedily_like_transformers(imported):
    _, hf_model, tok, gen, _ = imported
    prompt = tok.encode("the quick brown fox").ids
    ours = gen.generate_ids(prompt, Sampling(max_new_tokens=30, temperature=0.0))
    eos = tok.token_to_id(EOS)
    out = hf_model.generate(torch.tensor([prompt]), max_new_tokens=30, do_sample=False, eos_token_id=eos,
                            pad_token_id=eos, attention_mask=torch.ones(1, len(prompt), dtype=torch.long))
    theirs = out[0, len(prompt):].tolist()
    theirs = theirs[:theirs.index(eos)] if eos in theirs else theirs
    assert len(ours) >= 10 and ours == theirs


def test_the_engine_batches_imported_models_like_transformers_greedy(imported):
    """Several prompts of different lengths in one engine batch: each equals HF ``generate`` alone."""
    from plugformer.engine import Engine, SamplingParams

    _, hf_model, tok, gen, _ = imported
    eos = tok.token_to_id(EOS)
    engine = Engine(gen.model, gen.tokenizer, registries=load_plugins().registries, block_size=4, max_batch=3)
    prompts = [tok.encode(t).ids for t in ("the quick brown fox", "def main():\n", "hello", "the lazy dog. the")]
    outs = engine.generate(prompts, SamplingParams(max_tokens=20, temperature=0))
    for prompt, out in zip(prompts, outs):
        theirs = hf_model.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False, eos_token_id=eos,
                                   pad_token_id=eos, attention_mask=torch.ones(1, len(prompt), dtype=torch.long))
        theirs = theirs[0, len(prompt):].tolist()
        assert out.outputs[0].token_ids == (theirs[:theirs.index(eos)] if eos in theirs else theirs)


def test_exported_model_loads_in_transformers_with_the_same_logits(imported, tmp_path):
    case, _, tok, gen, ckpt = imported
    result = export_hf(ckpt, tmp_path / "hf")
    assert result.tokenizer and (tmp_path / "hf" / "tokenizer.json").is_file()
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ids = sample_ids(tok.get_vocab_size())
    with torch.no_grad():
        diff = max_diff(gen.model(ids), reloaded(ids).logits)
    print(f"\n{case}: export max |logit diff| = {diff:.3g}")
    assert diff < TOLERANCE
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert hf_tok("hello world")["input_ids"] == gen.tokenizer.encode("hello world")
    assert hf_tok.eos_token == EOS


def test_sharded_weights_import_like_a_single_file(tmp_path):
    hf_model, tok = tiny_hf_model(tmp_path / "hf", "llama", num_key_value_heads=2)
    hf_model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    shutil.copy(tmp_path / "hf" / "tokenizer.json", tmp_path / "sharded")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    import_hf(tmp_path / "sharded", tmp_path / "ckpt")
    gen = Generator.from_checkpoint(tmp_path / "ckpt", load_plugins().registries, device="cpu")
    ids = sample_ids(tok.get_vocab_size())
    with torch.no_grad():
        assert max_diff(gen.model(ids), hf_model(ids).logits) < TOLERANCE


@pytest.mark.parametrize("overrides", [
    ("position=learned", "norm=layernorm", "mlp=gelu", "mlp.approximate=none", "model.bias=false"),
    ("position=rope", "norm=rmsnorm", "mlp=swiglu", "model.n_kv_heads=2", "model.bias=true",
     "position.scaling=ntk", "position.scaling_factor=4.0", "mlp.multiple_of=16"),
])
def test_a_native_plugformer_model_exports_with_the_same_logits(builtin_host, tiny_config, tmp_path, overrides):
    from omegaconf import OmegaConf
    from plugformer.build import build
    from plugformer.checkpoint import save_model
    from plugformer.model import build_model

    cfg = tiny_config("tokenizer=byte", "objective=clm", *overrides)
    tokenizer = build(builtin_host.registries, "tokenizer", cfg.tokenizer)
    torch.manual_seed(0)
    model = build_model(cfg, builtin_host.registries, tokenizer.vocab_size).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    ckpt = tmp_path / "ckpt"
    (ckpt / "tokenizer").mkdir(parents=True)
    tokenizer.save(ckpt / "tokenizer")
    (ckpt / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    save_model(ckpt, model.state_dict())
    result = export_hf(ckpt, tmp_path / "hf")
    assert not result.tokenizer  # the byte tokenizer has no tokenizer.json: the model alone
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ids = sample_ids(tokenizer.vocab_size)[:, :16]
    with torch.no_grad():
        assert max_diff(model(ids), reloaded(ids).logits) < TOLERANCE


@pytest.mark.slow
def test_cli_imports_generates_and_exports(cli, tmp_path):
    hf_model, tok = tiny_hf_model(tmp_path / "hf", "llama", num_key_value_heads=2)
    imported = cli("import-hf", str(tmp_path / "hf"), "out=ckpt")
    assert "imported llama" in imported.stdout and "position=rope norm=rmsnorm mlp=swiglu" in imported.stdout
    prompt = "hello world"
    generated = cli("generate", "checkpoint=ckpt", f"prompt={prompt}", "temperature=0", "max_new_tokens=12")
    ids = tok.encode(prompt).ids
    eos = tok.token_to_id(EOS)
    out = hf_model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False, eos_token_id=eos,
                            pad_token_id=eos)[0, len(ids):].tolist()
    out = out[:out.index(eos)] if eos in out else out
    assert generated.stdout.rstrip("\n") == prompt + tok.decode(out)
    exported = cli("export-hf", "checkpoint=ckpt", "out=back")
    assert "exported llama" in exported.stdout
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "back").eval()
    x = sample_ids(tok.get_vocab_size())
    with torch.no_grad():
        assert max_diff(reloaded(x).logits, hf_model(x).logits) < TOLERANCE


@pytest.mark.slow
def test_cli_refuses_what_has_no_equivalent_in_one_line(cli, tmp_path):
    tiny_hf_model(tmp_path / "relu", "gpt2", activation_function="relu")
    refused = cli("import-hf", str(tmp_path / "relu"), "out=x", check=False)
    assert refused.returncode == 2 and "activation_function='relu'" in refused.stderr
    assert refused.stderr.count("\n") == 1 and not (tmp_path / "x").exists()

    tiny_hf_model(tmp_path / "hf", "gpt2")
    cli("import-hf", str(tmp_path / "hf"), "out=ckpt")
    alibi = tmp_path / "alibi"
    shutil.copytree(tmp_path / "ckpt", alibi)
    config = (alibi / "config.yaml").read_text()
    (alibi / "config.yaml").write_text(config.replace("position:\n  name: learned", "position:\n  name: alibi"))
    refused = cli("export-hf", f"checkpoint={alibi}", "out=y", check=False)
    assert refused.returncode == 2 and "position 'alibi' has no Hugging Face equivalent" in refused.stderr
    assert not (tmp_path / "y").exists()
    again = cli("import-hf", str(tmp_path / "hf"), "out=ckpt", check=False)
    assert again.returncode == 2 and "already exists" in again.stderr
