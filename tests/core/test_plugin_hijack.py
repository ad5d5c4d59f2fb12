"""A third-party plugin cannot take a built-in name by loading first: plugformer's own plugins load before
any other, a newcomer claiming a taken name without ``override=True`` is the one that fails (naming both
packages), and a plugin failing halfway leaves the built-ins exactly as they were."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from importlib.metadata import EntryPoint, entry_points

import pytest

from plugformer import hookimpl
from plugformer.plugins import ENTRY_POINT_GROUP, FIRST_PARTY_DIST, LoadSettings, PluginHost, first_party_first


def first_party_entry_points() -> list[EntryPoint]:
    return [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.dist is not None
            and ep.dist.name == FIRST_PARTY_DIST]


def registering(family: str, name: str, *, override: bool = False, fail_after: bool = False):
    @hookimpl
    def plugformer_register(registries):
        registries[family].register(name, f"evil_impl:{name}", override=override)
        if fail_after:
            raise RuntimeError("registration blew up halfway")

    return plugformer_register


def load(*eps) -> PluginHost:
    host = PluginHost()
    host.load_entry_points(eps, LoadSettings())
    return host


def test_first_party_entry_points_load_first_whatever_the_environment_lists_first(fake_plugin):
    evil = fake_plugin("fake_evil_first", "evil", dist="evil-dist")
    mine = first_party_entry_points()
    ordered = first_party_first([evil, *mine])
    assert ordered[: len(mine)] == mine and ordered[-1] is evil


def test_a_third_party_plugin_listed_first_cannot_replace_a_built_in(fake_plugin):
    import plugformer

    evil = fake_plugin("fake_evil_sdpa", "evil", dist="evil-dist", version="6.6",
                       plugformer_register=registering("attention", "sdpa"))
    host = load(evil, *first_party_entry_points())
    records = {r.name: r for r in host.records}
    assert records["attention"].status == "loaded"  # the first-party plugin is never the one marked failed
    assert records["evil"].status == "failed"
    error = records["evil"].error
    assert "attention 'sdpa' is registered twice" in error
    assert f"plugformer {plugformer.__version__}" in error and "evil-dist 6.6" in error
    entry = host.registries.attention.get("sdpa")
    assert entry.provider == "plugformer" and "evil" not in str(entry.target)


def test_an_explicit_override_still_replaces_a_built_in(fake_plugin):
    evil = fake_plugin("fake_override_sdpa", "fast", dist="fast-dist",
                       plugformer_register=registering("attention", "sdpa", override=True))
    host = load(evil, *first_party_entry_points())
    assert host.registries.attention.get("sdpa").provider == "fast-dist"


def test_an_override_that_fails_halfway_gives_the_built_in_back(fake_plugin):
    broken = fake_plugin("fake_broken_override", "broken", dist="broken-dist",
                         plugformer_register=registering("attention", "sdpa", override=True, fail_after=True))
    host = load(broken, *first_party_entry_points())
    assert {r.name: r.status for r in host.records}["broken"] == "failed"
    assert host.registries.attention.get("sdpa").provider == "plugformer"


@pytest.mark.slow
def test_an_installed_package_claiming_sdpa_fails_and_training_keeps_the_built_in(tmp_path):
    site = tmp_path / "site"
    (site / "hijack_plugin").mkdir(parents=True)
    (site / "hijack_plugin" / "__init__.py").write_text(textwrap.dedent('''
        from plugformer import hookimpl

        @hookimpl
        def plugformer_register(registries):
            registries.attention.register("sdpa", "hijack_plugin:Evil", description="not the real sdpa")
    '''))
    info = site / "hijack_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hijack-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[plugformer]\nhijack = hijack_plugin\n")
    # PYTHONPATH comes before the site-packages holding plugformer: its entry point is listed first
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    for key in ("PLUGFORMER_PLUGINS", "PLUGFORMER_BLOCK_PLUGINS", "PLUGFORMER_DISABLE_PLUGIN_AUTOLOAD",
                "PLUGFORMER_STRICT_PLUGINS"):
        env.pop(key, None)

    def plugformer(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "plugformer", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)

    listing = plugformer("plugins")
    assert listing.returncode == 0, listing.stderr
    hijack = next(line for line in listing.stdout.splitlines() if "hijack" in line)
    assert "failed" in hijack and "hijack-plugin" in listing.stdout
    assert "registered twice" in listing.stdout and "by plugformer" in listing.stdout
    validated = plugformer("validate", "attention=sdpa")
    assert validated.returncode == 0, validated.stderr
    sdpa = next(line.split() for line in validated.stdout.splitlines() if line.split()[:1] == ["attention"])
    assert sdpa[1:3] == ["sdpa", "plugformer"]
