"""Someone else's package adds a command: ``plugformer --help`` lists it with its provider (fast, without
importing it or torch), ``plugformer hello`` runs it, and a package that tries to take a core command's
name is refused by name while the core command keeps working."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _dist(site: Path, dist: str, version: str, module: str, entry_point: str) -> None:
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[plugformer]\n{entry_point} = {module}\n")


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A PYTHONPATH directory with ``hello-plugin`` (adds ``hello``) and ``greedy-plugin`` (wants ``train``)."""
    site = tmp_path / "site"
    (site / "hello_plugin").mkdir(parents=True)
    (site / "hello_plugin" / "__init__.py").write_text(textwrap.dedent('''
        from plugformer import hookimpl

        @hookimpl
        def plugformer_register_commands(commands):
            commands.register("hello", "hello_plugin.cli:hello", "greet someone: name=WHO [times=N]")
    '''))
    (site / "hello_plugin" / "cli.py").write_text(textwrap.dedent('''
        from plugformer.commands import parse_keyvalues

        def hello(args):
            values = parse_keyvalues("hello", args, ("name", "times"), required=("name",))
            for _ in range(int(values.get("times", "1"))):
                print(f"hello, {values['name']}!")
            return 0
    '''))
    _dist(site, "hello-plugin", "0.2.0", "hello_plugin", "hello")
    (site / "greedy_plugin.py").write_text(textwrap.dedent('''
        from plugformer import hookimpl

        @hookimpl
        def plugformer_register_commands(commands):
            commands.register("train", "greedy_plugin:train", "my own training")
    '''))
    _dist(site, "greedy-plugin", "1.0", "greedy_plugin", "greedy")
    return site


def _run(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    for key in ("PLUGFORMER_PLUGINS", "PLUGFORMER_BLOCK_PLUGINS", "PLUGFORMER_DISABLE_PLUGIN_AUTOLOAD",
                "PLUGFORMER_STRICT_PLUGINS"):
        env.pop(key, None)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_a_third_party_command_is_listed_and_runs(site, tmp_path):
    # CPU seconds, not wall-clock: what --help costs, whatever else the machine is running
    code = ("import sys, time; t = time.process_time(); from plugformer.cli.main import main; rc = main(['--help']); "
            "print('RC', rc, 'SECONDS', time.process_time() - t, 'TORCH', 'torch' in sys.modules, "
            "'CLI', 'hello_plugin.cli' in sys.modules)")
    listing = _run(site, tmp_path, "-c", code)
    *help_lines, last = listing.stdout.strip().splitlines()
    _, rc, _, seconds, _, torch, _, imported = last.split()
    assert (rc, torch, imported) == ("0", "False", "False"), listing.stderr
    assert float(seconds) <= 0.5, f"plugformer --help took {seconds} s"
    hello = next(line for line in help_lines if line.split()[:1] == ["hello"])
    assert "greet someone: name=WHO" in hello and "[hello-plugin: hello]" in hello
    assert any(line.split()[:1] == ["train"] for line in help_lines)

    greeting = _run(site, tmp_path, "-m", "plugformer", "hello", "name=world", "times=2")
    assert greeting.returncode == 0 and greeting.stdout == "hello, world!\nhello, world!\n", greeting.stderr
    typo = _run(site, tmp_path, "-m", "plugformer", "hello", "nmae=world")
    assert typo.returncode == 2 and "did you mean 'name'" in typo.stderr and typo.stderr.count("\n") == 1
    unknown = _run(site, tmp_path, "-m", "plugformer", "helo")
    assert unknown.returncode == 2 and "unknown command 'helo' (did you mean 'hello'?)" in unknown.stderr
    assert unknown.stderr.count("\n") == 1


def test_a_plugin_cannot_take_a_core_command(site, tmp_path):
    listing = _run(site, tmp_path, "-m", "plugformer", "plugins")
    refused = next(line for line in listing.stdout.splitlines() if line.split()[:1] == ["greedy"])
    assert "failed" in refused and "command 'train' is registered twice" in refused
    assert "the core (plugformer)" in refused and "greedy-plugin 1.0" in refused
    ok = _run(site, tmp_path, "-m", "plugformer", "validate", "attention=naive")
    assert ok.returncode == 0 and "config OK" in ok.stdout, ok.stderr
