"""Sweeps that mix components safely: invalid combinations are skipped with their reason (or fail the
sweep up front with --strict-sweep), re-running a sweep skips finished jobs and resumes unfinished ones,
and Hydra's Optuna sweeper minimises the validation loss the train task returns."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from plugformer.config.compose import parse_overrides as _parse
from plugformer.sweep import expand, pin_group_keys

TINY = ["tokenizer=byte", "model.n_layers=1", "model.d_model=32", "data.seq_len=32", "data.max_bytes=100000",
        "trainer.batch_size=2", "trainer.eval_batches=1", "trainer.log_every=1", "threads=1", "seed=0"]
#: model.n_heads=3 does not divide d_model=32: two of the four combinations cannot run
MIXED = ["attention=naive,sdpa", "model.n_heads=2,3"]


def jobs(sweep: Path) -> dict[str, dict]:
    return {j["label"]: j for j in json.loads((sweep / "sweep.json").read_text())["jobs"]}


def test_the_product_names_only_what_varies_and_pins_keys_of_swept_groups():
    combos = expand(["attention=naive,sdpa", "position=rope", "optimizer.lr=interval(0.001,0.01)"], _parse)
    assert [c.swept for c in combos] == [["attention=naive"], ["attention=sdpa"]]
    assert combos[0].overrides == ["attention=naive", "position=rope", "optimizer.lr=0.001"]
    pinned = pin_group_keys(["attention=naive,sdpa", "attention.window=4", "model.d_model=64"], _parse)
    assert pinned == ["attention=naive,sdpa", "attention.window=choice(4)", "model.d_model=64"]
    assert [c.swept for c in expand(pinned, _parse)] == [["attention=naive"], ["attention=sdpa"]]


@pytest.mark.slow
def test_invalid_combinations_are_skipped_with_one_line_each(cli, tmp_path):
    sweep = tmp_path / "sweep"
    proc = cli("train", "-m", *MIXED, *TINY, "trainer.max_steps=2", f"hydra.sweep.dir={sweep}")
    skipped = [line for line in proc.stderr.splitlines() if line.startswith("  skipped ")]
    assert skipped == [f"  skipped attention={a} model.n_heads=3: invalid config: model.d_model=32 is not "
                       "divisible by model.n_heads=3" for a in ("naive", "sdpa")]
    assert "skipping 2 of 4 sweep combination(s)" in proc.stderr
    states = jobs(sweep)
    assert {k: v["status"] for k, v in states.items()} == {
        "attention=naive model.n_heads=2": "finished", "attention=naive model.n_heads=3": "skipped",
        "attention=sdpa model.n_heads=2": "finished", "attention=sdpa model.n_heads=3": "skipped"}
    # job directories are named by the swept overrides only; skipped combinations get none
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == [
        "attention=naive,model.n_heads=2", "attention=sdpa,model.n_heads=2"]


@pytest.mark.slow
def test_strict_sweep_refuses_before_launching_anything(cli, tmp_path):
    sweep = tmp_path / "sweep"
    proc = cli("train", "-m", "--strict-sweep", *MIXED, *TINY, "trainer.max_steps=2", f"hydra.sweep.dir={sweep}",
               check=False)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("plugformer: error: 2 of 4 sweep combination(s) invalid (--strict-sweep): ")
    assert "attention=naive model.n_heads=3: invalid config" in line and not sweep.exists()


@pytest.mark.slow
def test_a_sweep_where_nothing_is_valid_is_an_error(cli, tmp_path):
    proc = cli("train", "-m", "attention=naive,nope", "attention.chunk=1", *TINY, check=False)
    assert proc.returncode == 2
    assert "2 of 2 sweep combination(s) invalid (none is valid)" in proc.stderr
    assert "unknown attention 'nope'" in proc.stderr and "unknown config key 'attention.chunk'" in proc.stderr


@pytest.mark.slow
def test_rerunning_a_sweep_skips_finished_jobs_and_resumes_unfinished_ones(cli, tmp_path, runs):
    sweep = tmp_path / "sweep"
    common = ["-m", "attention=naive,sdpa", "model.n_heads=2", *TINY, f"hydra.sweep.dir={sweep}"]
    cli("train", *common, "trainer.max_steps=3")
    first = {d.name: runs.losses(d) for d in sweep.iterdir() if d.is_dir()}
    assert all(sorted(losses) == [1, 2, 3] for losses in first.values())

    again = cli("train", *common, "trainer.max_steps=3")
    assert "Launching" not in again.stderr + again.stdout
    assert {j["status"] for j in jobs(sweep).values()} == {"finished"}
    assert all(j["reason"] == "already finished (summary.json)" for j in jobs(sweep).values())

    longer = cli("train", *common, "trainer.max_steps=5")  # same job directories: max_steps is not swept
    assert [j["overrides"][-1] for j in jobs(sweep).values()] == ["resume=true", "resume=true"]
    for name, losses in first.items():
        resumed = runs.losses(sweep / name)
        assert sorted(resumed) == [1, 2, 3, 4, 5]
        assert all(resumed[s] == losses[s] for s in losses)  # steps 1-3 are the first run's, not retrained
        assert json.loads((sweep / name / "summary.json").read_text())["step"] == 5
    assert "resume=true" in longer.stderr + longer.stdout


@pytest.mark.slow
def test_optuna_searches_lr_and_a_component_minimising_the_val_loss(cli, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="hydra-optuna-sweeper is not installed")
    sweep = tmp_path / "optuna"
    cli("train", "-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.seed=0",
        "optimizer.lr=interval(0.001,0.01)", "attention=choice(naive,sdpa)", "scheduler=constant", "model.n_heads=2",
        *TINY, "trainer.max_steps=3", f"hydra.sweep.dir={sweep}")
    import yaml

    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    trials = [d for d in sweep.iterdir() if d.is_dir()]
    assert len(trials) == 3
    val_losses = [json.loads((d / "summary.json").read_text())["val_loss"] for d in trials]
    assert result["best_value"] == pytest.approx(min(val_losses))
    assert result["best_params"]["attention"] in ("naive", "sdpa")
    assert 0.001 <= result["best_params"]["optimizer.lr"] <= 0.01


@pytest.mark.slow
def test_optuna_cannot_skip_so_an_invalid_search_space_fails_up_front(cli, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="hydra-optuna-sweeper is not installed")
    proc = cli("train", "-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=2", "model.n_heads=choice(2,3)",
               *TINY, check=False)
    assert proc.returncode == 2
    assert "1 of 2 sweep combination(s) invalid (the chosen hydra/sweeper cannot skip combinations)" in proc.stderr


def test_a_launcher_that_is_not_installed_is_named_in_one_line(cli):
    try:
        import hydra_plugins.hydra_submitit_launcher  # noqa: F401
        pytest.skip("hydra-submitit-launcher is installed here")
    except ImportError:
        pass
    proc = cli("train", "-m", "hydra/launcher=slurm", "attention=naive,sdpa", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("plugformer: error: hydra/launcher=slurm needs the Hydra plugin "
                                   "hydra-submitit-launcher, which is not installed "
                                   "(pip install hydra-submitit-launcher)")


def test_the_shipped_slurm_config_composes_against_submitits_schema(cli):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="hydra-submitit-launcher is not installed")
    proc = cli("train", "--cfg", "hydra", "hydra/launcher=slurm", "hydra.launcher.partition=gpu")
    launcher = proc.stdout.split("\n  launcher:\n", 1)[1].split("\n  sweeper:", 1)[0]
    for line in ("_target_: hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
                 "partition: gpu", "timeout_min: 240", "max_num_timeout: 0", "tasks_per_node: 1"):
        assert f"    {line}\n" in launcher + "\n", launcher
