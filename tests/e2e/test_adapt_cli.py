"""A user fine-tunes with LoRA from the command line, samples with the adapter unmerged, merges it into
a full checkpoint and gets the same greedy text from it."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("peft", reason="peft is not installed (pip install 'plugformer[lora]')")
pytestmark = pytest.mark.slow

GREEDY = ("prompt=def ", "max_new_tokens=24", "temperature=0", "device=cpu")


def _text(proc) -> str:
    return proc.stdout.strip().splitlines()[-1]


def test_lora_run_saves_peft_adapter_generates_and_merges_to_the_same_text(cli, tmp_path, runs):
    run = tmp_path / "lora"
    cli("train", *runs.tiny, "adapter=lora", "adapter.r=4", "trainer.max_steps=20", f"hydra.run.dir={run}")
    summary = json.loads((run / "summary.json").read_text())
    assert 0 < summary["trainable_params"] < summary["params"]
    last = run / "checkpoints" / "last"
    config = json.loads((last / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4
    unmerged = _text(cli("generate", f"checkpoint={last}", *GREEDY))
    merged_dir = tmp_path / "merged"
    proc = cli("merge", f"checkpoint={last}", f"out={merged_dir}")
    assert "merged adapter 'lora'" in proc.stdout
    assert "adapter" not in {p.name for p in merged_dir.iterdir()}
    assert _text(cli("generate", f"checkpoint={merged_dir}", *GREEDY)) == unmerged


def test_merge_errors_are_one_line(cli, tmp_path, runs):
    base = tmp_path / "base"
    cli("train", *runs.tiny, "trainer.max_steps=1", f"hydra.run.dir={base}")
    proc = cli("merge", f"checkpoint={base / 'checkpoints' / 'last'}", f"out={tmp_path / 'm'}", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("plugformer: error: checkpoint ")
    assert "trained without an adapter; pass adapter=DIR" in proc.stderr
    proc = cli("merge", "checkpoint=x", "outt=y", check=False)
    assert proc.returncode == 2 and "has no option 'outt' (did you mean 'out'?)" in proc.stderr
