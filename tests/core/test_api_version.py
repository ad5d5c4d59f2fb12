"""Plugins declare the plugin API version they target; the core refuses what it cannot honour and keeps
loading the rest."""
from __future__ import annotations

import pytest
from plugformer import PLUGIN_API_VERSION, PluginLoadError, __version__, hookimpl
from plugformer.plugins import LoadSettings, PluginHost, parse_api_version

MAJOR, MINOR = PLUGIN_API_VERSION


@hookimpl
def _register_flash(registries):
    registries.attention.register("flash_api_test", "fake_impl:Flash")


@hookimpl
def _register_rms(registries):
    registries.norm.register("rms_api_test", "fake_impl:Rms")


def _load(*eps, strict: bool = False) -> PluginHost:
    host = PluginHost()
    host.load_entry_points(eps, LoadSettings(strict=strict))
    return host


def _records(host: PluginHost) -> dict[str, object]:
    return {r.name: r for r in host.records}


def test_every_first_party_plugin_declares_the_current_api(builtin_host):
    for record in builtin_host.records:
        assert record.status == "loaded", record
        assert record.api == f"{MAJOR}.{MINOR}", record.name


@pytest.mark.parametrize("declared", [f"{MAJOR}", f"{MAJOR}.0", f"{MAJOR}.{MINOR}", (MAJOR, MINOR)])
def test_a_plugin_targeting_this_api_loads(fake_plugin, declared):
    ep = fake_plugin("fake_api_ok", "ok", dist="acme-ok", plugformer_api=declared,
                     plugformer_register=_register_flash)
    host = _load(ep)
    assert _records(host)["ok"].status == "loaded"
    assert "flash_api_test" in host.registries.attention


def test_a_plugin_declaring_nothing_is_accepted_with_an_empty_api(fake_plugin):
    host = _load(fake_plugin("fake_api_none", "legacy", plugformer_register=_register_flash))
    assert (_records(host)["legacy"].status, _records(host)["legacy"].api) == ("loaded", "")


@pytest.mark.parametrize("declared", [f"{MAJOR + 1}.0", f"{MAJOR}.{MINOR + 1}", "0.9"])
def test_an_incompatible_plugin_is_refused_naming_package_target_and_core(fake_plugin, declared):
    bad = fake_plugin("fake_api_future", "future", dist="acme-future", version="7.1", plugformer_api=declared,
                      plugformer_register=_register_flash)
    good = fake_plugin("fake_api_good", "good", dist="acme-good", plugformer_api=f"{MAJOR}.{MINOR}",
                       plugformer_register=_register_rms)
    host = _load(bad, good)
    record = _records(host)["future"]
    assert record.status == "failed"
    assert "acme-future 7.1" in record.error
    assert f"targets plugformer plugin API {parse_api_version(declared)[0]}." in record.error
    assert f"plugformer {__version__} provides plugin API {MAJOR}.{MINOR}" in record.error
    assert "flash_api_test" not in host.registries.attention  # nothing of it registered
    assert _records(host)["good"].status == "loaded" and "rms_api_test" in host.registries.norm
    assert "future" in " ".join(host.registries.failure_lines())  # unknown-name errors mention it


def test_strict_loading_turns_the_refusal_into_an_error(fake_plugin):
    bad = fake_plugin("fake_api_strict", "future", dist="acme-future", plugformer_api=f"{MAJOR + 1}",
                      plugformer_register=_register_flash)
    with pytest.raises(PluginLoadError, match="incompatible plugin API"):
        _load(bad, strict=True)


@pytest.mark.parametrize("declared", ["one", "1.x", "", "1.2.3", "-1"])
def test_a_malformed_declaration_fails_the_plugin_with_a_hint(fake_plugin, declared):
    host = _load(fake_plugin("fake_api_garbled", "garbled", plugformer_api=declared,
                             plugformer_register=_register_flash))
    record = _records(host)["garbled"]
    assert record.status == "failed" and "is not a plugin API version" in record.error
    assert "MAJOR.MINOR" in record.error


def test_the_cli_lists_the_refused_package_and_keeps_working(tmp_path):
    """Through ``plugformer plugins`` and ``validate``: an installed package built for API 2 is shown as
    failed with the reason, and the built-ins still validate a config."""
    import os
    import subprocess
    import sys

    (tmp_path / "acme_future").mkdir()
    (tmp_path / "acme_future" / "__init__.py").write_text(
        'from plugformer import hookimpl\nplugformer_api = "2.0"\n\n@hookimpl\ndef plugformer_register(registries):\n'
        '    registries.attention.register("future_attention", "acme_future:Nope")\n')
    info = tmp_path / "acme_future-7.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-future\nVersion: 7.1\n")
    (info / "entry_points.txt").write_text("[plugformer]\nfuture = acme_future\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}

    def plugformer(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "plugformer", *args], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120, check=False)

    listing = plugformer("plugins")
    assert listing.returncode == 0
    (row,) = [line for line in listing.stdout.splitlines() if line.strip().startswith("future ")]
    assert "acme-future 7.1" in row and f"failed: PluginLoadError: incompatible plugin API: plugin 'future' from " \
        f"acme-future 7.1 targets plugformer plugin API 2.0, but plugformer {__version__} provides plugin API " \
        f"{MAJOR}.{MINOR}" in row
    assert "future_attention" not in listing.stdout
    ok = plugformer("validate", "attention=naive", "tokenizer=byte")
    assert ok.returncode == 0 and "config OK" in ok.stdout
    gone = plugformer("validate", "attention=future_attention")
    assert gone.returncode == 2 and "plugins that failed to load: future (PluginLoadError: incompatible" in gone.stderr
