"""When the operating system says no (an impossible run directory, a full disk or a read-only file system
while a checkpoint is written, a reader that closed our pipe, bytes that are not UTF-8), the CLI says so in
one line naming the path, and what was saved before stays loadable."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TINY = ["tokenizer=byte", "model.n_layers=1", "model.d_model=32", "model.n_heads=2", "data.seq_len=32",
        "data.max_bytes=100000", "trainer.batch_size=2", "trainer.eval_batches=1", "trainer.log_every=1",
        "threads=1", "seed=0", "scheduler=constant", "trainer.callbacks=[metrics]"]

#: runs ``plugformer`` in-process with safetensors' writer failing for paths containing FAIL_AT, as a full
#: disk (or a file system turned read-only) fails the write of a checkpoint halfway through a run
FAILING_WRITER = r"""
import errno, os, sys
import safetensors.torch

real_save_file = safetensors.torch.save_file
code = getattr(errno, os.environ["FAIL_ERRNO"])

def save_file(tensors, filename, *args, **kwargs):
    if os.environ["FAIL_AT"] in str(filename):
        raise OSError(code, os.strerror(code), str(filename))
    return real_save_file(tensors, filename, *args, **kwargs)

safetensors.torch.save_file = save_file
from plugformer.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    """The lines of stderr that are not progress output or warnings; there must be no traceback."""
    assert "Traceback" not in proc.stderr, proc.stderr
    return [line for line in proc.stderr.splitlines()
            if line.strip() and not line.startswith("plugformer: warning:") and "it/s" not in line]


@pytest.mark.parametrize("make_run_dir", [
    lambda tmp: (tmp / "a-file").write_text("") or (tmp / "a-file" / "run", "Not a directory [ENOTDIR]"),
    lambda tmp: (Path("/proc/plugformer-cannot-exist/run"), "No such file or directory [ENOENT]"),
])
def test_an_impossible_run_directory_is_one_line_naming_it(cli, tmp_path, make_run_dir):
    run_dir, why = make_run_dir(tmp_path)
    proc = cli("train", *TINY, "trainer.max_steps=1", f"hydra.run.dir={run_dir}", check=False)
    lines = error_lines(proc)
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("plugformer: error: ") and why in lines[0] and str(run_dir.parent) in lines[0]


@pytest.mark.parametrize("errno_name, why", [("ENOSPC", "No space left on device"),
                                             ("EROFS", "Read-only file system")])
def test_a_failed_checkpoint_write_is_one_line_and_the_last_checkpoint_still_resumes(cli, cache_dir, tmp_path,
                                                                                     errno_name, why):
    run = tmp_path / "run"
    args = [*TINY, "trainer.max_steps=4", "trainer.save_every=2", "trainer.eval_every=0", f"hydra.run.dir={run}"]
    env = {**os.environ, "PLUGFORMER_CACHE": str(cache_dir), "FAIL_AT": "step-4", "FAIL_ERRNO": errno_name}
    proc = subprocess.run([sys.executable, "-c", FAILING_WRITER, "train", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    lines = error_lines(proc)
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("plugformer: error: ") and f"{why} [{errno_name}]" in lines[0]
    assert "step-4" in lines[0]  # the path being written
    last = run / "checkpoints" / "last"
    assert last.resolve().name == "step-2" and (last / "model.safetensors").is_file()
    if errno_name == "ENOSPC":  # room again: the run resumes from step 2 and finishes
        resumed = cli("train", *args, "resume=true", "optimizer.lr=0.01")
        assert last.resolve().name == "step-4"
        assert "plugformer: warning: optimizer.lr=0.01 is ignored on resume=true" in resumed.stderr


def test_a_closed_output_pipe_ends_quietly():
    """``plugformer plugins | head -1``, made deterministic: stdout is a pipe whose reader is already gone."""
    code = ("import os, sys\nr, w = os.pipe()\nos.close(r)\nos.dup2(w, 1)\n"
            "from plugformer.cli.main import main\nsys.exit(main(['plugins']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 141 and proc.stderr == ""


def test_plugins_piped_into_head_prints_no_error():
    proc = subprocess.run(f"{sys.executable} -m plugformer plugins | head -1; exit ${{PIPESTATUS[0]}}", shell=True,
                          executable="/bin/bash", capture_output=True, text=True, timeout=120)
    assert proc.returncode in (0, 141) and proc.stderr == "" and proc.stdout.count("\n") == 1


def test_a_prompt_that_is_not_utf8_is_one_line_naming_the_byte(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "plugformer", "generate", "checkpoint=/nowhere",
                           b"prompt=caf\xe9"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    lines = error_lines(proc)
    assert proc.returncode == 2 and len(lines) == 1 and "byte 0xe9 at offset 10" in lines[0], proc.stderr


def test_a_corpus_that_is_not_utf8_is_one_line_naming_the_file_and_offset(cli, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    content = b'{"text": "fine"}\n' * 20 + b'{"text": "caf\xe9"}\n'
    corpus.write_bytes(content)
    proc = cli("tokenizer", "train", "tokenizer=bpe", "tokenizer.vocab_size=300", "data=text",
               f"data.path={corpus}", "data.val_fraction=0", f"out={tmp_path / 'tok'}", check=False)
    lines = error_lines(proc)
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    offset = content.index(b"\xe9")
    assert str(corpus) in lines[0] and f"byte 0xe9 at offset {offset}" in lines[0]
