"""A user upgrades plugformer and keeps using checkpoints written before: the committed checkpoint in
tests/data/checkpoint-v1 (a 1-layer, d_model 16, byte-tokenizer model trained 2 steps by the code that
predates the plugformer.checkpoint package) still loads, and decodes exactly what that code decoded."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from plugformer.checkpoint import CheckpointDir, load_model_for_inference, load_state, resolve_checkpoint
from plugformer.generation import Generator, Sampling

FIXTURE = Path(__file__).parents[1] / "data" / "checkpoint-v1"
#: what the pre-package code produced from FIXTURE: prompt ids, greedy continuation, last-position logits
EXPECTED = json.loads((FIXTURE.parent / "checkpoint-v1.expected.json").read_text())


def test_the_old_checkpoint_loads_with_the_same_logits(builtin_host):
    loaded = load_model_for_inference(FIXTURE, builtin_host.registries, device="cpu")
    prompt = loaded.tokenizer.encode(EXPECTED["prompt"])
    assert prompt == EXPECTED["prompt_ids"]
    with torch.no_grad():
        logits = loaded.model(torch.tensor([prompt]))[0, -1]
    assert torch.allclose(logits, torch.tensor(EXPECTED["last_logits"]), atol=1e-4)


def test_the_old_checkpoint_generates_what_it_generated_before(builtin_host):
    gen = Generator.from_checkpoint(FIXTURE, builtin_host.registries, device="cpu")
    prompt = EXPECTED["prompt_ids"]
    assert gen.generate_ids(prompt, Sampling(max_new_tokens=8, temperature=0.0)) == EXPECTED["greedy"]
    sampled = gen.generate_ids(prompt, Sampling(max_new_tokens=8, temperature=0.8, seed=3))
    assert len(sampled) == 8
    assert sampled == gen.generate_ids(prompt, Sampling(max_new_tokens=8, temperature=0.8, seed=3))  # fixed seed


def test_an_old_run_directory_resolves_to_its_last_checkpoint_and_its_training_state_reads(tmp_path, builtin_host):
    run = tmp_path / "run"
    ckpts = CheckpointDir(run / "checkpoints")
    shutil.copytree(FIXTURE, ckpts.begin(2), dirs_exist_ok=True)
    final = ckpts.commit(2)
    assert resolve_checkpoint(run) == final.resolve()
    assert load_state(final, "trainer_state")["step"] == 2
    assert load_model_for_inference(run, builtin_host.registries, device="cpu").config.model.d_model == 16


@pytest.mark.parametrize("name", ["model.safetensors", "config.yaml", "plugins.json", "tokenizer"])
def test_the_fixture_has_the_documented_layout(name):
    assert (FIXTURE / name).exists()
