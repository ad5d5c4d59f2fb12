"""A prompt is free text: ``${...}`` in it is never an interpolation, it is printed as typed."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow

TINY_BYTE = ["tokenizer=byte", "model.n_layers=1", "model.d_model=32", "model.n_heads=2", "data.seq_len=32",
             "data.max_bytes=50000", "trainer.batch_size=2", "trainer.max_steps=2", "trainer.eval_every=0",
             "seed=0", "threads=1"]


def test_a_prompt_with_dollar_braces_is_printed_literally(cli, tmp_path):
    run = tmp_path / "run"
    cli("train", *TINY_BYTE, f"hydra.run.dir={run}")
    for prompt in ("x ${name} y", "${", "a \\${b} c", "it's ${oc.env:HOME}"):
        out = cli("generate", f"checkpoint={run}/checkpoints/last", f"prompt={prompt}", "max_new_tokens=2",
                  "temperature=0").stdout
        assert out.startswith(prompt), (prompt, out)
        quoted = cli("generate", f"checkpoint={run}/checkpoints/last", f'prompt="{prompt}"', "max_new_tokens=2",
                     "temperature=0").stdout
        assert quoted == out, prompt
