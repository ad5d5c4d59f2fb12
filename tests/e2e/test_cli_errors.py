"""Bad input gets one clear line and a non-zero exit, never a traceback."""
from __future__ import annotations

import pytest


def _one_line_error(proc) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.mark.parametrize("args, expected", [
    (["train", "attention=sdpx"], ["naive", "sdpa", "did you mean 'sdpa'"]),
    (["train", "model.n_layerz=3"], ["model.n_layerz", "n_layers", "did you mean 'n_layers'"]),
    (["train", "model.n_layers=abc"], ["model.n_layers=abc"]),
    (["train", "precision=bf17"], ["precision=bf17", "fp32", "bf16"]),
    (["train", "optimizer.lrr=1"], ["optimizer.lrr", "did you mean 'lr'"]),
    (["train", "model.d_model=65"], ["d_model=65", "n_heads"]),
    (["trian"], ["did you mean 'train'"]),
    (["generate", "checkpoint=/nonexistent"], ["/nonexistent"]),
    (["plugins", "--family", "atention"], ["did you mean 'attention'"]),
    (["plugins", "famly=norm"], ["no option 'famly'", "did you mean 'family'"]),
    (["report"], ["plugformer report needs DIR (or dir=...)"]),
    (["--block-plugin", "hf", "eval", "checkpoint=x", "tasks=t"], ["'lm-eval' command", "plugformer_hf"]),
    (["--block-plugin", "hf", "export-hf"], ["unknown command 'export-hf'"]),
])
def test_bad_input_is_one_line_naming_the_value_and_the_choices(cli, args, expected):
    line = _one_line_error(cli(*args, check=False))
    for text in expected:
        assert text in line, line


def test_validate_checks_a_config_without_training(cli, tmp_path):
    proc = cli("validate", "attention=naive", "position=learned")
    assert "config OK" in proc.stdout and "attention=naive" in proc.stdout
    assert not list(tmp_path.glob("runs"))


def test_help_lists_the_commands(cli):
    out = cli("--help").stdout
    assert all(c in out for c in ("train", "generate", "validate", "plugins"))
