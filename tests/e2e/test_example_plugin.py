"""The sample third-party package in docs/examples/plugformer-example-plugin, as its users get it: built into
a wheel, pip-installed into a fresh virtualenv (no network), then used through the CLI only: listed,
validated, trained with, checked by the conformance kit, swept with a Hydra launcher whose workers load it,
run on every torchrun rank, and finally uninstalled without a trace."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "plugformer-example-plugin"
DIST, VERSION = "plugformer-example-plugin", "0.2.0"
TINY = ["tokenizer=byte", "model.n_layers=1", "model.d_model=32", "model.n_heads=2", "data.seq_len=32",
        "data.max_bytes=100000", "trainer.batch_size=2", "trainer.max_steps=3", "trainer.eval_batches=1",
        "threads=1", "seed=0"]


class Venv:
    """A virtualenv layered on the test interpreter's environment (plugformer, torch, ...) holding the
    example plugin, installed from its wheel the way a user installs it."""

    def __init__(self, root: Path, cache: Path):
        self.root, self.cache = root, cache
        self.python = root / "bin" / "python"
        self.site = Path(subprocess.check_output(
            [str(self.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "PLUGFORMER_CACHE": str(self.cache), "PYTHONUNBUFFERED": "1",
                "PYTHONDONTWRITEBYTECODE": "1", **extra}

    def run(self, *args: str, cwd: Path, env: dict[str, str] | None = None,
            timeout: int = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.python), *args], cwd=cwd, env=env or self.env(), capture_output=True,
                              text=True, timeout=timeout, check=False)

    def plugformer(self, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
        return self.run("-m", "plugformer", *args, cwd=cwd, env=self.env(**env))


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    tmp = tmp_path_factory.mktemp("example-plugin")
    wheels = tmp / "wheels"
    # offline with this environment's setuptools; without one, pip fetches it into an isolated build env
    offline = ["--no-build-isolation", "--no-index"] if importlib.util.find_spec("setuptools") else []
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", *offline, "--no-deps", "-q", "-w", str(wheels),
                            str(EXAMPLE)], capture_output=True, text=True, timeout=300, check=False)
    assert build.returncode == 0, build.stderr[-2000:]
    shutil.rmtree(EXAMPLE / "build", ignore_errors=True)  # setuptools' scratch space inside the example
    for info in EXAMPLE.glob("*.egg-info"):
        shutil.rmtree(info, ignore_errors=True)
    (wheel,) = wheels.glob("plugformer_example_plugin-*.whl")
    root = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    venv = Venv(root, tmp / "cache")
    # layer it on this interpreter's environment (a venv's --system-site-packages would reach past it)
    (venv.site / "_plugformer_test_parent.pth").write_text(
        f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    install = venv.run("-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel), cwd=tmp)
    assert install.returncode == 0, install.stderr[-2000:]
    return venv


def test_plugins_lists_the_package_with_its_version_and_api(venv, tmp_path):
    listing = venv.plugformer("plugins", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert f"example    {DIST} {VERSION} [api 1.1]" in listing.stdout
    for name in ("chunked", "t5_bias", "csv_log"):
        assert f"{name}" in listing.stdout and f"{DIST} {VERSION}" in listing.stdout
    attention = json.loads(venv.plugformer("plugins", "--json", "--family", "attention", cwd=tmp_path).stdout)
    chunked = {c["name"]: c for c in attention["components"]["attention"]}["chunked"]
    assert (chunked["provider"], chunked["version"], chunked["available"]) == (DIST, VERSION, True)


def test_validate_checks_the_plugins_schema_and_its_yaml(venv, tmp_path):
    ok = venv.plugformer("validate", "attention=gemma_softcap", "position=t5_bias", "attention.chunk_size=16",
                         cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "attention=chunked" in ok.stdout and "position=t5_bias" in ok.stdout and DIST in ok.stdout
    typo = venv.plugformer("validate", "attention=chunked", "attention.chunk_sise=16", cwd=tmp_path)
    assert typo.returncode == 2
    (line,) = typo.stderr.strip().splitlines()
    assert "attention.chunk_sise" in line and "did you mean 'chunk_size'" in line
    bad = venv.plugformer("validate", "position=t5_bias", "position.num_buckets=many", cwd=tmp_path)
    assert bad.returncode == 2 and "position.num_buckets=many" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_train_uses_its_attention_position_callback_and_keys(venv, tmp_path):
    run = tmp_path / "run"
    proc = venv.plugformer("train", "attention=chunked", "attention.chunk_size=8", "attention.softcap=30",
                           "position=t5_bias", "position.num_buckets=16", "trainer.callbacks=[metrics,csv_log]",
                           "trainer.log_every=1", *TINY, f"hydra.run.dir={run}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    config = (run / "config.yaml").read_text()
    assert "chunk_size: 8" in config and "softcap: 30.0" in config and "num_buckets: 16" in config
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss,lr") and len(rows) == 1 + 3 + 1  # header, 3 steps, 1 evaluation
    manifest = {p["name"]: p for p in json.loads((run / "plugins.json").read_text())}
    assert (manifest["example"]["dist"], manifest["example"]["version"], manifest["example"]["api"]) == \
        (DIST, VERSION, "1.1")


def test_the_conformance_kit_and_its_own_tests_pass(venv, tmp_path):
    proc = venv.run("-m", "pytest", "-p", "no:cacheprovider", "-o", "addopts=", "-q", "-rs", "tests",
                    "--plugformer-conformance", f"--plugformer-provider={DIST}", cwd=EXAMPLE, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:]
    passed = re.search(r"(\d+) passed", proc.stdout)
    assert passed and int(passed.group(1)) >= 25, proc.stdout[-3000:]  # the plugin's own tests and the kit's
    assert "failed" not in proc.stdout and "test_attention_contract" in proc.stdout  # (a skip is listed)


def test_workers_of_a_hydra_launcher_load_the_plugin(venv, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="hydra-joblib-launcher is not installed")
    sweep = tmp_path / "sweep"
    proc = venv.plugformer("train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                           "attention=chunked,gemma_softcap,sdpa", "attention.chunk_size=8", "position=t5_bias",
                           *TINY, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # sdpa has no chunk_size: skipped with the reason, the others trained in joblib's worker processes
    assert "skipped attention=sdpa: unknown config key 'attention.chunk_size'" in proc.stderr
    for option in ("chunked", "gemma_softcap"):
        job = sweep / f"attention={option}"
        assert json.loads((job / "summary.json").read_text())["step"] == 3
        assert "chunk_size: 8" in (job / "config.yaml").read_text()
        loaded = {p["name"]: p["status"] for p in json.loads((job / "plugins.json").read_text())}
        assert loaded["example"] == "loaded"


def test_every_torchrun_rank_loads_the_plugins(venv, tmp_path):
    """A probe plugin records each process that loads it; the example's attention trains under DDP."""
    site, marks = tmp_path / "site", tmp_path / "marks"
    (site / "rank_probe").mkdir(parents=True)
    (site / "rank_probe" / "__init__.py").write_text(textwrap.dedent('''
        import os
        from pathlib import Path
        from plugformer import hookimpl

        plugformer_api = "1.0"

        @hookimpl
        def plugformer_register(registries):
            rank = os.environ.get("RANK", "launcher")
            (Path(os.environ["RANK_PROBE_DIR"]) / f"{rank}-{os.getpid()}").touch()
    '''))
    info = site / "rank_probe-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: rank-probe\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[plugformer]\nrank_probe = rank_probe\n")
    marks.mkdir()
    run = tmp_path / "ddp"
    proc = venv.plugformer("train", "launcher.nproc=2", "parallel=ddp", "attention=chunked", *TINY,
                           f"hydra.run.dir={run}", cwd=tmp_path, RANK_PROBE_DIR=str(marks),
                           PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = sorted(p.name.split("-")[0] for p in marks.iterdir())
    assert ranks.count("0") == 1 and ranks.count("1") == 1, ranks
    manifest = {p["name"]: p["status"] for p in json.loads((run / "plugins.json").read_text())}
    assert manifest["rank_probe"] == manifest["example"] == "loaded"


def test_pip_uninstall_removes_it_cleanly(venv, tmp_path):
    before = {p.name for p in venv.site.iterdir()}
    assert {"plugformer_example", f"plugformer_example_plugin-{VERSION}.dist-info"} <= before
    proc = venv.run("-m", "pip", "uninstall", "-y", DIST, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    leftovers = [p.name for p in venv.site.iterdir() if p.name.startswith("plugformer_example")]
    assert leftovers == []
    listing = venv.plugformer("plugins", cwd=tmp_path)
    assert listing.returncode == 0 and DIST not in listing.stdout and "chunked" not in listing.stdout
    gone = venv.plugformer("validate", "attention=chunked", cwd=tmp_path)
    assert gone.returncode == 2 and "unknown attention 'chunked'" in gone.stderr
