"""A user fine-tunes a checkpoint from the command line: on a shipped task or their own JSONL records,
fully or with LoRA, with sft, dpo or distill, and reads exact match before and after."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

pytestmark = pytest.mark.slow

BASE = ["tokenizer=byte", "model.n_layers=2", "model.d_model=64", "model.n_heads=2", "data.seq_len=64",
        "trainer.batch_size=4", "data.max_bytes=200000", "trainer.max_steps=2", "threads=1",
        "trainer.callbacks=[metrics]"]
COMMON = ["data.seq_len=32", "trainer.batch_size=16", "threads=1", "eval_examples=20", "max_new_tokens=8",
          "trainer.callbacks=[metrics]", "trainer.log_every=1", "optimizer.lr=3e-3", "scheduler.warmup_steps=0"]
FT = ["data=uppercase", "data.n_train=200", "data.n_val=20", *COMMON]


@pytest.fixture(scope="module")
def base(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny byte-level checkpoint every test starts from."""
    run = tmp_path_factory.mktemp("base") / "run"
    env = {**os.environ, "PLUGFORMER_CACHE": str(cache_dir)}
    subprocess.run([sys.executable, "-m", "plugformer", "train", *BASE, f"hydra.run.dir={run}"], check=True,
                   env=env, capture_output=True, text=True, timeout=600)
    return run / "checkpoints" / "last"


def test_full_fine_tuning_on_a_task_lowers_the_loss_and_reports_exact_match(cli, tmp_path, runs, base):
    run = tmp_path / "ft"
    proc = cli("finetune", f"checkpoint={base}", *FT, "trainer.max_steps=30", "trainer.eval_every=15",
               f"hydra.run.dir={run}")
    assert "exact match on 20 held-out records" in proc.stdout
    rows = runs.metrics(run)
    assert rows[0]["step"] == 0 and {"val_exact_match", "val_loss", "val_perplexity"} <= set(rows[0])
    assert [r["step"] for r in rows if "val_exact_match" in r] == [0, 15, 30]
    curve = runs.losses(run)
    assert curve[30] < curve[1] - 0.5
    summary = json.loads((run / "finetune.json").read_text())
    assert summary["trainable_params"] == summary["params"] and summary["held_out_records"] == 20
    assert 0.0 <= summary["exact_match_after"] <= 1.0
    saved = OmegaConf.load(run / "checkpoints" / "last" / "config.yaml")
    assert saved.objective.name == "sft" and saved.data.name == "uppercase"
    assert saved.finetune.checkpoint == str(base.resolve()) and saved.model.d_model == 64
    out = cli("generate", f"checkpoint={run}/checkpoints/last", "prompt=up abc=", "temperature=0", "max_new_tokens=4")
    assert out.stdout.startswith("up abc=")


def test_chat_records_from_a_jsonl_file_with_a_chat_template(cli, tmp_path, runs, base):
    records = tmp_path / "chat.jsonl"
    records.write_text("".join(json.dumps({"messages": [
        {"role": "system", "content": "answer in capitals"}, {"role": "user", "content": w},
        {"role": "assistant", "content": w.upper()}]}) + "\n" for w in ("cat", "dog", "owl", "emu", "yak") * 4))
    run = tmp_path / "chat"
    cli("finetune", f"checkpoint={base}", f"data={records.name}", *COMMON, "template=chatml", "data.val_fraction=0.3",
        "trainer.max_steps=3", "trainer.batch_size=4", f"hydra.run.dir={run}")
    saved = OmegaConf.load(run / "checkpoints" / "last" / "config.yaml")
    assert saved.data.name == "jsonl" and saved.data.path == str(records.resolve())
    assert saved.finetune.template.assistant_start == "<|im_start|>assistant\n"
    assert len(runs.losses(run)) == 3


@pytest.mark.skipif(importlib.util.find_spec("peft") is None, reason="peft is not installed (extra: lora)")
def test_lora_fine_tuning_trains_a_small_share_and_saves_a_peft_adapter(cli, tmp_path, base):
    run = tmp_path / "lora"
    cli("finetune", f"checkpoint={base}", *FT, "adapter=lora", "adapter.r=2", "trainer.max_steps=4",
        f"hydra.run.dir={run}")
    summary = json.loads((run / "finetune.json").read_text())
    assert 0 < summary["trainable_params"] < 0.1 * summary["params"]
    last = run / "checkpoints" / "last"
    assert (last / "adapter" / "adapter_config.json").is_file()
    # the adapter applied unmerged on the base it was trained from samples what the fine-tuned run does
    greedy = ("prompt=up abc=", "temperature=0", "max_new_tokens=4")
    tuned = cli("generate", f"checkpoint={last}", *greedy).stdout
    unmerged = cli("generate", f"checkpoint={base}", f"adapter={last / 'adapter'}", *greedy).stdout
    assert unmerged == tuned


def test_dpo_on_preference_pairs_uses_the_starting_checkpoint_as_reference(cli, tmp_path, runs, base):
    run = tmp_path / "dpo"
    cli("finetune", f"checkpoint={base}", *FT, "data.format=preference", "objective=dpo", "trainer.max_steps=4",
        f"hydra.run.dir={run}")
    assert "reward_accuracy" in runs.metrics(run)[1]
    assert runs.losses(run)[1] == pytest.approx(0.6931, abs=1e-3)  # policy == reference at the first step
    saved = OmegaConf.load(run / "checkpoints" / "last" / "config.yaml")
    assert saved.objective.reference == str(base.resolve())


def test_distillation_from_a_teacher_checkpoint(cli, tmp_path, runs, base):
    run = tmp_path / "distill"
    cli("finetune", f"checkpoint={base}", *FT, "objective=distill", f"objective.teacher={base}", "objective.alpha=0.5",
        "trainer.max_steps=3", f"hydra.run.dir={run}")
    row = runs.metrics(run)[1]
    assert row["kl"] == pytest.approx(0.0, abs=1e-5) and row["ce"] > 0  # student == teacher at the first step


def test_plain_documents_continue_pretraining_and_report_perplexity(cli, tmp_path, base):
    run = tmp_path / "text"
    proc = cli("finetune", f"checkpoint={base}", "data=stdlib", "data.max_bytes=200000", "data.seq_len=64",
               "trainer.batch_size=4", "trainer.max_steps=3", "threads=1", "trainer.callbacks=[metrics]",
               f"hydra.run.dir={run}")
    assert "validation perplexity:" in proc.stdout
    summary = json.loads((run / "finetune.json").read_text())
    assert summary["perplexity_before"] > 1 and "exact_match_before" not in summary


@pytest.mark.parametrize("args, message", [
    (["data=missing.jsonl"], "data=missing.jsonl: no such records file"),
    (["checkpoint=/nonexistent"], "is not a plugformer checkpoint directory"),
    (["objective=dpo"], "objective 'dpo' needs preference pairs"),
    (["objective=sft", "template.user=Q:"], "template.user='Q:' must contain '{content}'"),
    (["data.seq_len=4096"], "data.seq_len=4096 exceeds the checkpoint's model.max_seq_len=64"),
])
def test_bad_fine_tuning_arguments_are_one_line_errors(cli, tmp_path, base, args, message):
    proc = cli("finetune", f"checkpoint={base}", *FT, "trainer.max_steps=2", *args, f"hydra.run.dir={tmp_path / 'x'}",
               check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr and proc.stderr.strip().count("\n") == 0, proc.stderr[-2000:]


def test_a_resumed_fine_tune_reproduces_the_uninterrupted_losses(cli, tmp_path, runs, base):
    args = [f"checkpoint={base}", *FT, "scheduler=constant", "trainer.eval_every=0", "trainer.save_every=3"]
    cli("finetune", *args, "trainer.max_steps=6", f"hydra.run.dir={tmp_path / 'straight'}")
    cli("finetune", *args, "trainer.max_steps=3", f"hydra.run.dir={tmp_path / 'split'}")
    cli("finetune", *args, "trainer.max_steps=6", "resume=true", f"hydra.run.dir={tmp_path / 'split'}")
    assert runs.losses(tmp_path / "straight") == runs.losses(tmp_path / "split")
    assert [r["step"] for r in runs.metrics(tmp_path / "split")].count(0) == 1
