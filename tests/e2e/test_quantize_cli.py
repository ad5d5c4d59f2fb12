"""A user quantizes a trained checkpoint from the command line and samples from the quantized one."""
from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("quantizer,library", [("int8", "torchao"), ("nf4", "bitsandbytes")])
def test_quantized_checkpoint_is_smaller_and_generates(cli, tmp_path, runs, quantizer, library):
    pytest.importorskip(library)
    run = tmp_path / "base"
    cli("train", *runs.tiny, "trainer.max_steps=10", f"hydra.run.dir={run}")
    out = tmp_path / quantizer
    proc = cli("quantize", f"checkpoint={run / 'checkpoints' / 'last'}", f"quantizer={quantizer}", f"out={out}")
    assert f"quantized with '{quantizer}'" in proc.stdout
    record = json.loads((out / "quantization.json").read_text())
    assert record["quantizer"]["name"] == quantizer and record["bytes"] < record["source_bytes"]
    assert not list(out.rglob("*.bin")) and not list(out.rglob("*.pt"))  # safetensors + JSON only
    proc = cli("generate", f"checkpoint={out}", "prompt=import ", "max_new_tokens=12", "temperature=0",
               "device=cpu")
    assert proc.stdout.startswith("import ")


def test_quantize_errors_are_one_line(cli, tmp_path, runs):
    run = tmp_path / "base"
    cli("train", *runs.tiny, "trainer.max_steps=1", f"hydra.run.dir={run}")
    last = run / "checkpoints" / "last"
    proc = cli("quantize", f"checkpoint={last}", "quantizer=int4", f"out={tmp_path / 'q'}", check=False)
    assert proc.returncode == 2
    assert "unknown quantizer 'int4'" in proc.stderr or "quantizer 'int4'" in proc.stderr
    assert "int8" in proc.stderr.strip().splitlines()[-1]
    proc = cli("quantize", f"checkpoint={last}", "quantizer=nf4", "quantizer.blocksize=100", f"out={tmp_path / 'q'}",
               check=False)
    assert proc.returncode == 2 and "blocksize=100 is not a bitsandbytes block size" in proc.stderr
    proc = cli("train", *runs.tiny, "quantizer=int8", "trainer.max_steps=1", check=False)
    assert proc.returncode == 2 and "plugformer quantize checkpoint=... quantizer=int8" in proc.stderr
