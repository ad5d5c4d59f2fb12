"""``plugformer generate`` runs on the inference engine: the same text as the single-sequence path for a
fixed seed, offline batches from a prompts file, speculative decoding with a draft checkpoint."""
from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow

TINY = ["tokenizer=byte", "model.n_layers=2", "model.d_model=32", "model.n_heads=2", "data.seq_len=32",
        "data.max_bytes=50000", "trainer.batch_size=2", "trainer.max_steps=3", "trainer.eval_every=0",
        "seed=0", "threads=1"]


@pytest.fixture
def checkpoint(cli, tmp_path):
    run = tmp_path / "run"
    cli("train", *TINY, f"hydra.run.dir={run}")
    return run / "checkpoints" / "last"


def test_seeded_text_is_what_single_sequence_decoding_gives(cli, checkpoint):
    from plugformer import get_registries
    from plugformer.generation import Generator

    out = cli("generate", f"checkpoint={checkpoint}", "prompt=def main(", "max_new_tokens=16", "seed=4",
              "top_k=40", "num_samples=2").stdout
    gen = Generator.from_checkpoint(checkpoint, get_registries(), "cpu")
    expected = [gen.complete("def main(", max_new_tokens=16, temperature=0.8, top_k=40, seed=4 + i) for i in range(2)]
    expected_out = "".join("def main(" + text + "\n" for text in expected)
    assert out == expected_out.replace("\r\n", "\n").replace("\r", "\n")  # the subprocess reads universal newlines


def test_a_prompts_file_becomes_a_jsonl_of_completions(cli, checkpoint, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ("def a(", "import b", "x = ")))
    out = tmp_path / "completions.jsonl"
    cli("generate", f"checkpoint={checkpoint}", f"prompts={prompts}", f"out={out}", "max_new_tokens=8",
        "temperature=0", "num_samples=2", "ignore_eos=true")
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in records] == ["def a(", "import b", "x = "]
    assert all(len(r["completions"]) == 2 and r["completions"][0]["finish_reason"] == "length" for r in records)
    again = cli("generate", f"checkpoint={checkpoint}", f"prompts={prompts}", f"out={out}", check=False)
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"text": 3}\n')
    refused = cli("generate", f"checkpoint={checkpoint}", f"prompts={bad}", check=False)
    assert refused.returncode == 2 and "line 2" in refused.stderr and "Traceback" not in refused.stderr


def test_speculative_decoding_with_a_draft_keeps_greedy_text(cli, checkpoint):
    plain = cli("generate", f"checkpoint={checkpoint}", "prompt=def main(", "max_new_tokens=20",
                "temperature=0", "ignore_eos=true").stdout
    spec = cli("generate", f"checkpoint={checkpoint}", "prompt=def main(", "max_new_tokens=20", "temperature=0",
               "ignore_eos=true", f"draft={checkpoint}", "num_speculative_tokens=3")
    assert spec.stdout == plain
    assert "accepted (100%)" in spec.stderr


def test_beam_search_from_the_command_line(cli, checkpoint, tmp_path):
    from plugformer import get_registries
    from plugformer.checkpoint import load_model_for_inference
    from plugformer.engine import beam_search

    out = tmp_path / "beams.jsonl"
    cli("generate", f"checkpoint={checkpoint}", "prompt=def main(", "max_new_tokens=12", "num_beams=4",
        "num_samples=2", f"out={out}")
    record = json.loads(out.read_text())
    loaded = load_model_for_inference(checkpoint, get_registries(), device="cpu")
    beams = beam_search(loaded.model, loaded.tokenizer.encode("def main("), num_beams=4, max_tokens=12,
                        eos_id=loaded.tokenizer.eos_id, num_return_sequences=2)
    assert [c["text"] for c in record["completions"]] == [loaded.tokenizer.decode(b.token_ids) for b in beams]
    assert record["completions"][0]["score"] >= record["completions"][1]["score"]
    bad = cli("generate", f"checkpoint={checkpoint}", "prompt=x", "num_beams=2", "num_samples=3", check=False)
    assert bad.returncode == 2 and "num_return_sequences" in bad.stderr and "Traceback" not in bad.stderr
