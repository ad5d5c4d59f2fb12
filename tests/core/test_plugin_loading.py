"""Plugin discovery through entry points: isolation of broken plugins, switches, strictness, hooks."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import plugformer.plugins as plugins_mod
from plugformer import PluginLoadError, RunInfo, hookimpl
from plugformer.plugins import LoadSettings, PluginHost, load_plugins

BUILTIN_NAMES = ("naive sdpa learned sinusoidal rope byte bpe adamw sgd cosine constant single ddp layernorm "
                 "gelu clm stdlib text progress metrics").split()
FAMILY_NAMES = ("tokenizer", "attention", "position", "norm", "mlp", "objective", "parallel", "optimizer",
                "scheduler", "data", "callback")


def registering(family: str, *names: str, fail_after: bool = False):
    """A ``plugformer_register`` hook that registers ``names`` in ``family`` (then raises, if asked)."""

    @hookimpl
    def plugformer_register(registries):
        for name in names:
            registries[family].register(name, f"fake_impl:{name}")
        if fail_after:
            raise RuntimeError("registration blew up halfway")

    return plugformer_register


def load(*eps, settings: LoadSettings | None = None) -> PluginHost:
    if settings is None:
        settings = LoadSettings()
    host = PluginHost()
    host.load_entry_points(eps, settings)
    return host


def by_name(host: PluginHost) -> dict[str, object]:
    return {r.name: r for r in host.records}


def test_good_plugin_registers_with_its_distribution(fake_plugin):
    ep = fake_plugin("fake_good_plugin", "good", dist="acme-good", version="3.2",
                     plugformer_register=registering("attention", "flash"))
    host = load(ep)
    entry = host.registries.attention.get("flash")
    assert (entry.provider, entry.version, entry.plugin) == ("acme-good", "3.2", "good")
    assert by_name(host)["good"].status == "loaded"


@pytest.mark.parametrize("kind", ["import_error", "raising_hook", "misspelled_hook", "bad_hook_argument"])
def test_broken_plugin_is_recorded_and_others_still_load(fake_plugin, make_ep, kind):
    good = fake_plugin("fake_good_neighbour", "good", plugformer_register=registering("norm", "rms"))
    if kind == "import_error":
        broken = make_ep("broken", "fake_module_that_does_not_exist_anywhere")
        expect = "ModuleNotFoundError"
    elif kind == "raising_hook":
        broken = fake_plugin("fake_half_plugin", "broken",
                             plugformer_register=registering("attention", "half", fail_after=True))
        expect = "registration blew up halfway"
    elif kind == "misspelled_hook":

        @hookimpl
        def plugformer_regster(registries):
            registries.attention.register("never", "x:Y")

        broken = fake_plugin("fake_typo_plugin", "broken", plugformer_regster=plugformer_regster)
        expect = "unknown hook 'plugformer_regster'"
    else:

        @hookimpl
        def plugformer_register(registry):  # the spec's argument is 'registries'
            pass

        broken = fake_plugin("fake_badarg_plugin", "broken", plugformer_register=plugformer_register)
        expect = "registry"
    host = load(broken, good)

    records = by_name(host)
    assert records["broken"].status == "failed" and expect in records["broken"].error
    assert records["good"].status == "loaded" and "rms" in host.registries.norm
    assert "broken" in host.registries.failures
    assert host.registries.attention.names() == []  # whatever it registered before failing is gone
    assert not any(getattr(p, "__name__", "") in ("fake_half_plugin", "fake_typo_plugin", "fake_badarg_plugin")
                   for p in host.pm.get_plugins())


def test_failed_plugin_is_named_when_its_component_is_asked_for(make_ep):
    host = load(make_ep("flashplug", "fake_flash_attn_not_installed"))
    with pytest.raises(KeyError, match=r"plugins that failed to load: flashplug \(ModuleNotFoundError"):
        host.registries.attention.get("flash")


def test_duplicate_entry_point_names_are_detected(fake_plugin):
    first = fake_plugin("fake_dup_a", "dup", dist="dist-a", plugformer_register=registering("mlp", "a"))
    second = fake_plugin("fake_dup_b", "dup", dist="dist-b", plugformer_register=registering("mlp", "b"))
    host = load(first, second)
    statuses = [(r.dist, r.status) for r in host.records]
    assert statuses == [("dist-a", "loaded"), ("dist-b", "failed")]
    assert "duplicate entry point name 'dup'" in host.records[1].error and "dist-a" in host.records[1].error
    assert host.registries.mlp.names() == ["a"]


@pytest.fixture
def two_plugins(fake_plugin):
    return (fake_plugin("fake_alpha", "alpha", dist="alpha-dist", plugformer_register=registering("mlp", "a")),
            fake_plugin("fake_beta", "beta", dist="beta-dist", plugformer_register=registering("norm", "b")))


@pytest.mark.parametrize("settings, loaded, why", [
    (LoadSettings(allow=frozenset({"alpha"})), {"alpha"}, "not in allow list"),
    (LoadSettings(allow=frozenset({"alpha-dist"})), {"alpha"}, "not in allow list"),  # by distribution
    (LoadSettings(block=frozenset({"beta"})), {"alpha"}, "blocked"),
    (LoadSettings(autoload=False), set(), "autoload disabled"),
    (LoadSettings(autoload=False, allow=frozenset({"alpha"})), {"alpha"}, "not in allow list"),
], ids=["allow", "allow-dist", "block", "no-autoload", "no-autoload-but-allowed"])
def test_switches_choose_what_loads(two_plugins, settings, loaded, why):
    host = load(*two_plugins, settings=settings)
    assert {r.name for r in host.records if r.status == "loaded"} == loaded
    skipped = [r for r in host.records if r.status == "skipped"]
    assert skipped and all(r.error == why for r in skipped)
    assert ("a" in host.registries.mlp) == ("alpha" in loaded) and "b" not in host.registries.norm


def test_switches_come_from_the_environment(monkeypatch, clean_plugin_env):
    assert LoadSettings.from_env() == LoadSettings()
    monkeypatch.setenv("PLUGFORMER_PLUGINS", "alpha, beta-dist,")
    monkeypatch.setenv("PLUGFORMER_BLOCK_PLUGINS", "gamma")
    monkeypatch.setenv("PLUGFORMER_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("PLUGFORMER_STRICT_PLUGINS", "true")
    assert LoadSettings.from_env() == LoadSettings(autoload=False, allow=frozenset({"alpha", "beta-dist"}),
                                                   block=frozenset({"gamma"}), strict=True)
    monkeypatch.setenv("PLUGFORMER_STRICT_PLUGINS", "0")
    assert not LoadSettings.from_env().strict


def test_environment_switches_reach_load_plugins(monkeypatch, clean_plugin_env, no_global_host, two_plugins):
    monkeypatch.setattr(plugins_mod, "entry_points", lambda group: list(two_plugins))
    monkeypatch.setenv("PLUGFORMER_BLOCK_PLUGINS", "alpha")
    host = load_plugins()
    assert {r.name: r.status for r in host.records} == {"alpha": "skipped", "beta": "loaded"}


def test_strict_mode_turns_a_failure_into_an_error(fake_plugin, make_ep):
    good = fake_plugin("fake_strict_good", "good", plugformer_register=registering("mlp", "ok"))
    with pytest.raises(PluginLoadError, match=r"strict plugin loading: broken \(ModuleNotFoundError"):
        load(good, make_ep("broken", "fake_missing_strict_module"), settings=LoadSettings(strict=True))
    assert load(good, settings=LoadSettings(strict=True)).records[0].status == "loaded"


def test_load_plugins_is_idempotent(monkeypatch, clean_plugin_env, no_global_host, fake_plugin):
    calls = []

    @hookimpl
    def plugformer_register(registries):
        calls.append(1)

    ep = fake_plugin("fake_counted", "counted", plugformer_register=plugformer_register)
    monkeypatch.setattr(plugins_mod, "entry_points", lambda group: [ep])
    first = load_plugins()
    assert load_plugins() is first and plugins_mod.get_registries() is first.registries
    assert calls == [1]


def test_import_loads_no_plugins_and_no_torch():
    code = ("import sys, plugformer, plugformer.plugins as p; "
            "print(p._host is None, 'torch' in sys.modules, 'hydra' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "False", "False"]


def test_lifecycle_hooks_reach_registered_objects(host):
    seen = []

    class Recorder:
        @hookimpl
        def plugformer_step_end(self, run, step, metrics):
            seen.append((run.max_steps, step, metrics["loss"]))

    class OnlyStep:  # an implementation may take any subset of the spec's arguments
        @hookimpl
        def plugformer_step_end(self, step):
            seen.append(step)

    host.pm.register(Recorder())
    host.pm.register(OnlyStep())
    run = RunInfo(run_dir=Path("."), config={}, max_steps=10)
    host.hook.plugformer_step_end(run=run, step=3, metrics={"loss": 1.5}, state=None)
    assert len(seen) == 2 and 3 in seen and (10, 3, 1.5) in seen


def test_plugin_module_hooks_are_called_after_loading(fake_plugin):
    seen = []

    @hookimpl
    def plugformer_train_end(run, metrics):
        seen.append(metrics["step"])

    host = load(fake_plugin("fake_logger", "logger", plugformer_train_end=plugformer_train_end))
    host.hook.plugformer_train_end(run=RunInfo(Path("."), {}, 5), metrics={"step": 5}, state=None)
    assert seen == [5]


def test_manifest_lists_loaded_plugins_with_versions(host):
    import plugformer

    manifest = {m["name"]: m for m in host.manifest()}
    assert set(manifest) == {"attention", "position", "layers", "text", "training", "parallel", "adapt", "quant",
                             "tasks", "hf", "guide", "serve", "embed", "retrieval"}
    for m in manifest.values():
        assert (m["dist"], m["version"], m["status"], m["error"]) == ("plugformer", plugformer.__version__,
                                                                      "loaded", "")
        assert m["value"].startswith("plugformer_")


def test_plugins_command_lists_everything_without_importing_torch():
    code = ("import sys; from plugformer.cli.main import main; rc = main(['plugins']); "
            "print('RC', rc, 'TORCH', 'torch' in sys.modules)")
    env = {**os.environ, "PLUGFORMER_PLUGINS": "plugformer"}  # only the first-party plugins
    for key in ("PLUGFORMER_BLOCK_PLUGINS", "PLUGFORMER_DISABLE_PLUGIN_AUTOLOAD", "PLUGFORMER_STRICT_PLUGINS"):
        env.pop(key, None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.strip().splitlines()[-1] == "RC 0 TORCH False"
    words = set(out.split())
    assert set(FAMILY_NAMES) <= words
    assert set(BUILTIN_NAMES) <= words, set(BUILTIN_NAMES) - words
    assert "0 failed" in out
    # only implementations that declare an availability check may say they cannot run here
    unavailable = [line.split()[0] for line in out.splitlines() if "unavailable:" in line]
    assert set(unavailable) <= {"xformers", "sentencepiece", "adafactor", "deepspeed"}, unavailable


def test_failure_quoted_in_an_unknown_name_error_stays_on_one_line(fake_plugin):
    @hookimpl
    def plugformer_register(registry):  # the spec's argument is 'registries'
        pass

    host = load(fake_plugin("fake_multiline_failure", "badarg", plugformer_register=plugformer_register))
    with pytest.raises(KeyError) as err:
        host.registries.attention.get("flash")
    assert "badarg (PluginValidationError" in str(err.value) and "\n" not in str(err.value)
