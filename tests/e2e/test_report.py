"""``plugformer report <sweep dir>``: a table of every combination (Markdown, CSV, printed) and a PNG of
the loss curves, from what the runs left on disk."""
from __future__ import annotations

import csv
import json
import shutil

import pytest
from plugformer.report import collect, read_job
from plugformer.sweep import write_failure

TINY = ["tokenizer=byte", "model.n_layers=1", "model.d_model=32", "data.seq_len=32", "data.max_bytes=100000",
        "trainer.batch_size=2", "trainer.eval_batches=1", "trainer.log_every=2", "trainer.eval_every=2",
        "trainer.max_steps=6", "threads=1", "seed=0"]


def test_a_failed_job_and_an_interrupted_one_are_told_apart(tmp_path):
    failed, running = tmp_path / "failed", tmp_path / "running"
    for d in (failed, running):
        d.mkdir()
        (d / "metrics.jsonl").write_text('{"step": 2, "loss": 3.5}\n{"step": 2, "val_loss": 3.75}\n{"step": 4, "lo')
    write_failure(failed, "invalid config: out of memory at step 3")
    assert read_job(failed, ["a=1"]).status == "failed"
    assert read_job(failed, ["a=1"]).note == "invalid config: out of memory at step 3"
    job = read_job(running, ["a=2"])  # no summary.json yet, a half-written last line
    assert (job.status, job.steps, job.train_loss, job.val_loss) == ("running", 2, 3.5, 3.75)


def test_without_matplotlib_the_tables_are_written_and_the_missing_plot_explained(tmp_path, monkeypatch):
    import importlib.util

    from plugformer import report

    job = tmp_path / "sweep" / "lr=0.1"
    job.mkdir(parents=True)
    (job / "metrics.jsonl").write_text('{"step": 1, "loss": 4.0}\n{"step": 1, "val_loss": 4.5}\n')
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    jobs, files, no_plot = report.write_report(tmp_path / "sweep")
    assert set(files) == {"md", "csv"} and not (tmp_path / "sweep" / "report.png").exists()
    assert no_plot == "matplotlib is not installed (pip install 'plugformer[report]')"
    assert (jobs[0].label, jobs[0].status, jobs[0].val_loss) == ("lr=0.1", "running", 4.5)


def test_a_directory_without_jobs_is_one_clear_error(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    proc = cli("report", str(tmp_path / "empty"), check=False)
    assert proc.returncode == 2 and "no sweep jobs found in" in proc.stderr
    proc = cli("report", str(tmp_path / "missing"), check=False)
    assert proc.returncode == 2 and "does not exist" in proc.stderr


@pytest.mark.slow
def test_report_tables_and_plots_a_real_sweep(cli, tmp_path):
    pytest.importorskip("matplotlib", reason="plugformer report needs matplotlib (the report extra)")
    sweep = tmp_path / "sweep"
    cli("train", "-m", "attention=naive,sdpa", "model.n_heads=2,3", *TINY, f"hydra.sweep.dir={sweep}")
    # the sdpa job as a run killed halfway leaves it: metrics so far, no summary
    interrupted = sweep / "attention=sdpa,model.n_heads=2"
    (interrupted / "summary.json").unlink()
    lines = (interrupted / "metrics.jsonl").read_text().splitlines()
    (interrupted / "metrics.jsonl").write_text("\n".join(r for r in lines if json.loads(r)["step"] <= 4) + "\n")
    shutil.rmtree(interrupted / "checkpoints")

    proc = cli("report", str(sweep), "--out", str(tmp_path / "out"))
    printed = proc.stdout.splitlines()
    assert printed[0].split() == ["combination", "status", "params", "train_loss", "val_loss", "tokens_per_s",
                                  "peak_memory_mb", "wall_s", "steps", "note"]
    assert printed[1].startswith("attention=naive model.n_heads=2  finished")
    assert printed[2].startswith("attention=sdpa model.n_heads=2   running")
    assert "skipped" in printed[3] and "model.d_model=32 is not divisible by model.n_heads=3" in printed[3]

    rows = list(csv.DictReader((tmp_path / "out" / "report.csv").open()))
    assert [r["status"] for r in rows] == ["finished", "running", "skipped", "skipped"]
    done = rows[0]
    summary = json.loads((sweep / "attention=naive,model.n_heads=2" / "summary.json").read_text())
    assert float(done["val_loss"]) == pytest.approx(summary["val_loss"])
    assert float(done["train_loss"]) == pytest.approx(summary["loss"])
    assert int(done["params"]) == summary["params"] and int(done["steps"]) == 6
    assert float(done["tokens_per_s"]) > 0 and float(done["peak_memory_mb"]) > 0 and float(done["wall_s"]) > 0
    assert rows[1]["steps"] == "4" and rows[1]["val_loss"] != ""  # what the interrupted run logged
    assert "trainer.max_steps=6" in done["overrides"]

    md = (tmp_path / "out" / "report.md").read_text()
    assert "| combination | status | params | train_loss | val_loss |" in md
    assert "| attention=naive model.n_heads=2 | finished |" in md and "1 finished, 1 running, 2 skipped" in md

    png = tmp_path / "out" / "report.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    height, width = matplotlib.image.imread(png).shape[:2]
    assert width > 1000 and height > 400
    assert [j.status for j in collect(sweep)] == ["finished", "running", "skipped", "skipped"]
