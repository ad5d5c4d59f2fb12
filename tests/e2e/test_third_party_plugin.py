"""Someone else's package plugs in without forking: its entry point registers a component, its own
config group files are found through the ``plugformer.conf`` entry-point group, and a broken plugin
next to it does not break anything else."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture
def site_with_plugin(tmp_path: Path) -> Path:
    """A directory on PYTHONPATH holding an installed-looking distribution ``demo-plugin`` (dist-info with
    entry points) and a second, broken one."""
    site = tmp_path / "site"
    pkg = site / "demo_plugin"
    (pkg / "conf" / "attention").mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent('''
        from plugformer import hookimpl

        @hookimpl
        def plugformer_register(registries):
            registries.attention.register("scaled_sdpa", "demo_plugin.attn:ScaledSdpa",
                                          schema="demo_plugin.attn:ScaledSdpaConfig",
                                          description="sdpa with a temperature on the scores")
    '''))
    (pkg / "attn.py").write_text(textwrap.dedent('''
        from dataclasses import dataclass
        import torch.nn.functional as F
        from plugformer.interfaces import Attention, causal_mask

        @dataclass
        class ScaledSdpaConfig:
            temperature: float = 1.0

        class ScaledSdpa(Attention):
            def forward(self, q, k, v, *, causal, attn_bias=None, q_offset=0):
                k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
                v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
                mask = causal_mask(q.shape[2], k.shape[2], q_offset, q.device) if causal else None
                scale = 1.0 / (q.shape[-1] ** 0.5 * self.config.temperature)
                return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    '''))
    (pkg / "conf" / "__init__.py").write_text("")
    (pkg / "conf" / "attention" / "hot.yaml").write_text(textwrap.dedent('''
        defaults:
          - /plugformer_schema/attention/scaled_sdpa@_here_
          - _self_
        temperature: 2.0
    '''))
    info = site / "demo_plugin-0.3.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: demo-plugin\nVersion: 0.3.0\n")
    (info / "entry_points.txt").write_text("[plugformer]\ndemo = demo_plugin\n\n"
                                           "[plugformer.conf]\ndemo = demo_plugin.conf\n")
    broken = site / "broken_plugin-1.0.dist-info"
    broken.mkdir()
    (broken / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (broken / "entry_points.txt").write_text("[plugformer]\nbroken = no_such_module_anywhere\n")
    return site


def _plugformer(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
           "PLUGFORMER_CACHE": str(cwd / "cache")}
    return subprocess.run([sys.executable, "-m", "plugformer", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_a_third_party_component_and_its_config_files_are_usable_by_name(site_with_plugin, tmp_path):
    listing = _plugformer(site_with_plugin, tmp_path, "plugins")
    assert "scaled_sdpa" in listing.stdout and "demo-plugin 0.3.0" in listing.stdout
    assert "broken" in listing.stdout and "failed" in listing.stdout  # shown, not fatal
    ok = _plugformer(site_with_plugin, tmp_path, "validate", "attention=hot")
    assert ok.returncode == 0 and "attention=scaled_sdpa" in ok.stdout, ok.stderr
    typo = _plugformer(site_with_plugin, tmp_path, "validate", "attention=hot", "attention.temprature=3")
    assert typo.returncode == 2 and "did you mean 'temperature'" in typo.stderr
    run = tmp_path / "run"
    train = _plugformer(site_with_plugin, tmp_path, "train", "attention=scaled_sdpa", "attention.temperature=0.5",
                        "tokenizer=byte", "model.n_layers=1", "model.d_model=32", "model.n_heads=2",
                        "data.seq_len=32", "data.max_bytes=100000", "trainer.batch_size=2", "trainer.max_steps=3",
                        f"hydra.run.dir={run}")
    assert train.returncode == 0, train.stderr[-2000:]
    assert "temperature: 0.5" in (run / "checkpoints" / "last" / "config.yaml").read_text()
    assert '"demo-plugin"' in (run / "plugins.json").read_text()


def test_unknown_names_mention_the_plugin_that_failed_to_load(site_with_plugin, tmp_path):
    err = _plugformer(site_with_plugin, tmp_path, "train", "attention=scaled_sdpx")
    assert err.returncode == 2 and "did you mean 'scaled_sdpa'" in err.stderr
    assert "broken (ModuleNotFoundError" in err.stderr
    strict = _plugformer(site_with_plugin, tmp_path, "--strict-plugins", "plugins")
    assert strict.returncode == 2 and "no_such_module_anywhere" in strict.stderr
    blocked = _plugformer(site_with_plugin, tmp_path, "--block-plugin", "broken", "--strict-plugins", "plugins")
    assert blocked.returncode == 0 and "skipped: blocked" in blocked.stdout
