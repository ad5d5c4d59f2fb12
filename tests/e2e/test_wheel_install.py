"""plugformer works from a built wheel, not only from the checkout: configs, entry points and the CLI
all come from the installed files."""
from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: the first-party plugins the wheel declares (pyproject's ``plugformer`` entry points)
FIRST_PARTY = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["plugformer"]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project built as a wheel and unpacked into its own directory (dependencies not included)."""
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp / "dist"), str(ROOT)],
                   check=True, capture_output=True)
    wheel = next((tmp / "dist").glob("plugformer-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(tmp / "site"),
                    str(wheel)], check=True, capture_output=True)
    return tmp / "site"


def _run_from(site_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # -S: no site-packages processing, so an editable install of the checkout cannot leak in; the
    # dependencies come from this interpreter's site-packages, after the wheel's own directory.
    deps = [p for p in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()}]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site_dir), *deps]), "PLUGFORMER_CACHE": str(cwd / "cache")}
    return subprocess.run([sys.executable, "-S", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_wheel_holds_the_framework_plugins_and_configs(wheel_site):
    assert (wheel_site / "plugformer" / "conf" / "train.yaml").is_file()
    assert (wheel_site / "plugformer" / "conf" / "attention" / "sdpa.yaml").is_file()
    for pkg in ("plugformer_attention", "plugformer_position", "plugformer_layers", "plugformer_text",
                "plugformer_training", "plugformer_parallel", "plugformer_guide", "plugformer_serve",
                "plugformer_embed", "plugformer_retrieval", "plugformer_vectordb"):
        assert (wheel_site / pkg / "__init__.py").is_file(), pkg
    assert not (wheel_site / "core").exists() and not (wheel_site / "plugins").exists()


def test_the_installed_wheel_lists_plugins_trains_and_generates(wheel_site, tmp_path):
    where = _run_from(wheel_site, tmp_path, "-c", "import plugformer, plugformer_attention; "
                      "print(plugformer.__file__); print(plugformer_attention.__file__)")
    assert where.returncode == 0, where.stderr
    assert all(line.startswith(str(wheel_site)) for line in where.stdout.split())
    listing = _run_from(wheel_site, tmp_path, "-m", "plugformer", "plugins")
    loaded = f"{len(FIRST_PARTY)} plugin(s) loaded, 0 failed"
    assert listing.returncode == 0 and loaded in listing.stdout, listing.stdout
    run = tmp_path / "run"
    train = _run_from(wheel_site, tmp_path, "-m", "plugformer", "train", "tokenizer=byte", "model.n_layers=1",
                      "model.d_model=32", "model.n_heads=2", "data.seq_len=32", "data.max_bytes=100000",
                      "trainer.batch_size=2", "trainer.max_steps=3", f"hydra.run.dir={run}")
    assert train.returncode == 0, train.stderr[-2000:]
    sample = _run_from(wheel_site, tmp_path, "-m", "plugformer", "generate", f"checkpoint={run}/checkpoints/last",
                       "prompt=x", "max_new_tokens=5")
    assert sample.returncode == 0 and sample.stdout.startswith("x"), sample.stderr[-2000:]
